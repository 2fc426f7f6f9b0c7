"""int8 ONNX classifiers: the image encoder's products quantized, the head and the familiarity
reference kept float32, the agreement with float32 measured and recorded, for every head kind."""

import numpy as np
import onnx
import pytest
import torch

from promptlab.cli import main
from promptlab.deploy.onnx_quantize import QuantizeError, nodes_after_the_encoder, quantize_classifier
from promptlab.deploy.onnx_runtime import OnnxClassifier
from promptlab.export import export_classifier
from tests.builders import BUILDERS, ONE_PER_HEAD_KIND

CASES = [(name, "dynamic") for name in ONE_PER_HEAD_KIND] + [("CoOp", "static"), ("TipAdapter", "static")]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_int8_keeps_the_head_in_float32_and_records_its_agreement(name, mode, tmp_path):
    torch.manual_seed(0)
    model = BUILDERS[name][0]().eval()
    fp32 = export_classifier(model, tmp_path / "c.onnx")
    size = model.preprocess.size
    images = np.random.default_rng(0).standard_normal((20, 3, size, size)).astype(np.float32)
    record = quantize_classifier(fp32, tmp_path / "c8.onnx", mode, images, "random images", images[:8])
    graph = onnx.load(str(tmp_path / "c8.onnx")).graph
    kept = nodes_after_the_encoder(onnx.load(str(fp32)))  # CoCoOp: none, its text encoder runs per image
    assert kept or name == "CoCoOp"
    assert {n.name for n in graph.node if n.name in kept and n.op_type in ("MatMul", "Gemm")} == set(kept)
    quantized_ops = {n.op_type for n in graph.node}
    assert ("MatMulInteger" in quantized_ops) if mode == "dynamic" else ("QuantizeLinear" in quantized_ops)
    int8 = OnnxClassifier(tmp_path / "c8.onnx")
    assert int8.meta["quantization"] == record and record["mode"] == mode
    agree = (OnnxClassifier(fp32).probabilities(images).argmax(1) == int8.probabilities(images).argmax(1)).mean()
    assert record["top1_agreement"] == pytest.approx(agree) and record["agreement_images"] == "20 random images"
    assert int8.class_names == OnnxClassifier(fp32).class_names


def test_export_quantize_measures_on_the_configs_validation_images(image_folder, tmp_path, capsys):
    output = tmp_path / "c.onnx"
    args = ["export", "-c", "configs/tiny/coop.yaml", f"--data.root={image_folder}", "-o", str(output)]
    assert main([*args, "--quantize", "int8"]) == 0
    assert "Quantized to int8 (dynamic): top-1 agreement with float32" in capsys.readouterr().out
    record = OnnxClassifier(output).meta["quantization"]
    assert record["agreement_images"].endswith("validation images") and 0 <= record["top1_agreement"] <= 1
    assert main(["classify", "--classifier", str(output), str(image_folder), "--no_progress"]) == 0


def test_export_quantize_needs_an_onnx_name_and_images(tmp_path, capsys):
    assert (
        main(["export", "--classifier", "x.safetensors", "-o", str(tmp_path / "x.safetensors"), "--quantize", "int8"])
        == 2
    )
    assert "--quantize writes an ONNX classifier: pass -o with a .onnx name." in capsys.readouterr().err
    from promptlab.cli.quantize import image_sets

    with pytest.raises(QuantizeError, match=r"pass --quantize_images FOLDER"):
        image_sets(None, {}, None)
