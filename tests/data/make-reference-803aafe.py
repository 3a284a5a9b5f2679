"""Run with the code of 803aafe: a store of grids and a CKA run, and attribution maps, for the
runs service's same-numbers test."""
import json
import os

os.environ["STITCHLAB_HOME"] = "/tmp/oldout/home"
import torch

torch.set_num_threads(2)
from core.cka_runs import run_cka
from core.grid import cached_model, run_grid
from core.stitched import load_stitched
from core.store import Store

from core.attribution import compare
from core.data import load_dataset

store = Store("/tmp/oldout/store-803aafe.sqlite3")
pair = {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_2222-s0"}
lstsq = run_grid({**pair, "mode": "lstsq", "sender_layers": ["stem", "layer2.0", "layer4.0"],
                  "receiver_layers": ["stem", "layer2.1", "layer4.1"], "train_limit": 1000, "eval_limit": 500},
                 store=store, device="cpu")
trained = run_grid({**pair, "mode": "lstsq+train", "epochs": 1.0, "sender_layers": ["layer1.0", "layer3.0"],
                    "receiver_layers": ["layer1.0", "layer3.1"], "train_limit": 512, "eval_limit": 300,
                    "batch_size": 128, "control": "random-sender"}, store=store, device="cpu")
cka_id = run_cka({"model_a": pair["sender"], "model_b": pair["receiver"], "limit": 500, "batch_size": 250},
                 store, device="cpu")
data = load_dataset("fashion-mnist", "test")
image = data.images[5:6].float() / 255.0
stitched = load_stitched(store, lstsq.run_id, "layer2.0", "layer2.1")
maps = compare(cached_model(pair["sender"], "cpu"), cached_model(pair["receiver"], "cpu"), stitched, image,
               method="saliency")
out = {"grid_lstsq": lstsq.run_id, "grid_trained": trained.run_id, "cka": cka_id,
       "attribution": {"index": 5, "method": "saliency", "cell": ["layer2.0", "layer2.1"],
                       "maps": {k: v.display[0].round(5).tolist() for k, v in maps.items()},
                       "predictions": {k: int(v.predictions[0]) for k, v in maps.items()}}}
json.dump(out, open("/tmp/oldout/reference-803aafe.json", "w"))
print(out["grid_lstsq"], out["grid_trained"], out["cka"])
