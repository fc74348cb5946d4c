"""The DDP test's two ranks (gloo, on this CPU): each writes the sample indices its
streaming loaders gave it, per split, to rank<k>.json."""

import json
import os
import sys

import torch.distributed as dist

from visionlab.data import ImageFolderDataModule

if __name__ == "__main__":
    root, data_dir, out = sys.argv[1:4]
    dist.init_process_group("gloo")
    dm = ImageFolderDataModule(
        root=root, image_size=8, loader="stream", data_dir=data_dir, batch_size=4, eval_batch_size=4, num_workers=1
    )
    if int(os.environ["LOCAL_RANK"]) == 0:
        dm.prepare_data()
    dist.barrier()
    dm.setup()
    seen = {
        split: [int(i) for _, _, index in loader for i in index]
        for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader()))
    }
    with open(f"{out}/rank{dist.get_rank()}.json", "w") as fh:
        json.dump(seen, fh)
    dist.destroy_process_group()
