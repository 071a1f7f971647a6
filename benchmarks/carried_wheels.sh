# Sourced by the GPU scripts (gpu_session.sh, gpu_check.sh, gpu_real_slice.sh), from the
# repository root: a GPU box with JAX but without keras, namex, optree or pycocotools gets them
# from the wheels carried in .whl/, installed once into /tmp/site, which goes on PYTHONPATH.
# Returns non-zero if pip fails. Without .whl/ it changes nothing.
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ ! -d /tmp/site/keras ]; then
    ${PY:-python3} -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || return 1
fi
if [ -d /tmp/site ] && [[ ":${PYTHONPATH:-}:" != *:/tmp/site:* ]]; then
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
