"""The data: reading COCO (annotations, masks, photos), planning which person annotations become
figures, writing them to a resumable coco.npy (coco_process.py's work), and reading coco.npy back
as training batches."""
