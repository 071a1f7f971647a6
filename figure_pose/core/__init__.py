"""The shared pieces every stage uses: atomic writes, the Keras backend's start, the command-line
types, the figure geometry and record format, the confidence-map codec, the PCK metric and the
pictures. They depend on nothing above them: no module here imports from figure_pose.data,
figure_pose.training or figure_pose.evaluation."""
