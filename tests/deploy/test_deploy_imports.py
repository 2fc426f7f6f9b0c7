"""Loading an exported classifier imports neither Lightning, torchmetrics nor the methods: checked in a
fresh interpreter for every kind of head and encoder change (NoLA's visual prompts, CLIP-LoRA's deltas,
MaPLe's deep prompts), and for the ONNX runtime, which imports no torch either."""

import json
import subprocess
import sys

from promptlab.export import export_classifier
from tests.builders import BUILDERS, ONE_PER_HEAD_KIND

TRAINING_STACK = ("lightning", "torchmetrics", "promptlab.methods", "promptlab.export")
LOAD_AND_REPORT = """
import json, sys
import torch
from promptlab.deploy import Classifier
report = {}
for name, path in json.loads(sys.argv[1]).items():
    classifier = Classifier.load(path, device="cpu")
    probabilities = classifier.predict_proba(torch.zeros(2, 3, 32, 32))
    report[name] = {"head": classifier.head.kind, "visual_prompts": classifier.meta["backbone"]["visual_prompts"],
                    "lora": classifier.meta["backbone"].get("lora"),
                    "deep_prompts": classifier.meta["backbone"].get("deep_prompts"), "rows": len(probabilities)}
report["imported"] = sorted({m.split(".")[0] if not m.startswith("promptlab.") else ".".join(m.split(".")[:2])
                             for m in sys.modules if m.split(".")[0] in ("lightning", "torchmetrics", "promptlab")})
print(json.dumps(report))
"""


def test_every_head_kind_loads_without_the_training_stack(tmp_path):
    files = {
        name: str(export_classifier(BUILDERS[name][0](), tmp_path / f"{name}.safetensors"))
        for name in ONE_PER_HEAD_KIND
    }
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_REPORT, json.dumps(files)], capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))  # shown with -s: what the fresh interpreter imported
    imported = report.pop("imported")
    assert not [m for m in imported if m.startswith(TRAINING_STACK)], imported
    assert {name: entry["head"] for name, entry in report.items()} == {
        name: BUILDERS[name][1].kind for name in ONE_PER_HEAD_KIND
    }
    assert report["NoLA"]["visual_prompts"] == 3 and all(entry["rows"] == 2 for entry in report.values())
    assert report["CLIPLoRA"]["lora"]["rank"] == 2 and report["CoOp"]["lora"] is None
    assert report["MaPLe"]["deep_prompts"] == {"depth": 2, "tokens": 2}


def test_the_onnx_runtime_imports_no_torch(tmp_path):
    onnx_file = export_classifier(BUILDERS["NoLA"][0](), tmp_path / "c.onnx")
    code = (
        "import sys, numpy as np; from promptlab.deploy import OnnxClassifier; "
        f"p = OnnxClassifier({str(onnx_file)!r}).predict_proba(np.zeros((2, 3, 32, 32), np.float32)); "
        "print(len(p), sorted(m for m in ('torch', 'lightning', 'open_clip') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "[]"]
