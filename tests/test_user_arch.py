"""A practitioner's own architecture from the command line: ``--arch module.path:callable`` with ``--arch-kwargs``,
strict weight checks, the model card, and a module written here (never the registry) corrected end to end."""
from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from corrective_unlearning.cli import main
from corrective_unlearning.inputs import build_arch, load_model, parse_arch_kwargs
from corrective_unlearning.inputs.arch import call_arguments

MODULE = textwrap.dedent('''
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self, num_classes=2, in_channels=1, width=4):
            super().__init__()
            self.width = width
            self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x)).mean((2, 3)))


    def factory(model_name, **kwargs):  # a library factory's shape: num_classes only through **kwargs
        return {"net": Net}[model_name](**kwargs)


    NOT_CALLABLE = 3


    def not_a_model():
        return "hello"
''')


@pytest.fixture
def usermod(tmp_path, monkeypatch):
    name = f"usernets_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    yield name
    sys.modules.pop(name, None)


def test_the_data_sizes_go_only_where_the_signature_names_them(usermod):
    net = build_arch(f"{usermod}:Net", 4, 3, {"width": 6})
    assert net.head.out_features == 4 and net.conv.in_channels == 3 and net.width == 6
    assert build_arch(f"{usermod}:Net", 4, 3, {"num_classes": 7}).head.out_features == 7  # kwargs override
    # a factory taking **kwargs gets only what the user gives (as timm:create_model)
    import importlib
    module = importlib.import_module(usermod)
    assert call_arguments(module.factory, 4, 3, {"model_name": "net"}) == {"model_name": "net"}
    made = build_arch(f"{usermod}:factory", 4, 3, {"model_name": "net", "num_classes": 5, "in_channels": 3})
    assert made.head.out_features == 5
    assert build_arch("small_cnn", 4, 3).__class__.__name__  # registry names as before


@pytest.mark.parametrize("arch, message", [
    ("no_such_module_xyz:Net", "expected an importable module 'no_such_module_xyz'"),
    ("{mod}:Missing", "to define 'Missing', it has no 'Missing'"),
    ("{mod}:NOT_CALLABLE", "expected a class or function, got int"),
    ("{mod}:not_a_model", "expected it to return a torch.nn.Module, got str"),
    ("{mod}:", "expected a registry name"),
])
def test_bad_arch_is_one_line(usermod, arch, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_arch(arch.format(mod=usermod), 4, 3)


def test_arch_kwargs_must_be_a_yaml_mapping():
    assert parse_arch_kwargs("{width: 64, name: x}") == {"width": 64, "name": "x"}
    assert parse_arch_kwargs(None) == {} and parse_arch_kwargs("") == {}
    with pytest.raises(ValueError, match="--arch-kwargs: expected a YAML mapping .* not valid YAML"):
        parse_arch_kwargs("{width: [64")
    with pytest.raises(ValueError, match="--arch-kwargs: expected a YAML mapping"):
        parse_arch_kwargs("[1, 2]")


def test_weights_are_checked_strictly_naming_the_keys(usermod, tmp_path):
    net = build_arch(f"{usermod}:Net", 4, 3, {"width": 6})
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp_path / "ok.safetensors"))
    loaded = load_model(tmp_path / "ok.safetensors", f"{usermod}:Net", 4, 3, {"width": 6})
    assert torch.equal(loaded.conv.weight, net.conv.weight)
    extra = dict(state, **{"extra.bias": torch.zeros(2)})
    del extra["head.bias"]
    save_file(extra, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError) as info:
        load_model(tmp_path / "bad.safetensors", f"{usermod}:Net", 4, 3, {"width": 6})
    assert "lacks: head.bias" in str(info.value) and "model lacks: extra.bias" in str(info.value)
    with pytest.raises(ValueError, match="shape mismatch"):  # other kwargs: another shape
        load_model(tmp_path / "ok.safetensors", f"{usermod}:Net", 4, 3, {"width": 5})


def _blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    for i, c in enumerate(labels.tolist()):
        images[i, c] = 250
    return images.numpy(), labels.numpy()


def test_a_users_module_is_corrected_end_to_end(usermod, tmp_path, monkeypatch, capsys):
    """Done when: a model in a module the test writes, through ``corrective fix --arch module:Net``; the corrected
    weights load back into that class, and the model card says how to rebuild it."""
    import importlib
    Net = importlib.import_module(usermod).Net
    torch.manual_seed(0)
    net = Net(num_classes=3, in_channels=3, width=6)
    images, labels = _blobs(48)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "m.safetensors"))
    (tmp_path / "flagged.txt").write_text("1\n4\n7\n")
    out = tmp_path / "fixed"
    code = main(["fix", "--model", str(tmp_path / "m.safetensors"), "--arch", f"{usermod}:Net",
                 "--arch-kwargs", "{width: 6}", "--data", str(tmp_path / "data.npz"), "--flagged",
                 str(tmp_path / "flagged.txt"), "--method", "cf", "--hparams", "{steps: 2}", "--out", str(out),
                 "--quiet", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((out / "model.json").read_text())
    assert card["arch"] == f"{usermod}:Net" and card["arch_kwargs"] == {"width": 6}
    assert card["num_classes"] == 3 and card["in_channels"] == 3
    assert f"from {usermod} import Net" in card["rebuild"] and "width=6" in card["rebuild"]
    fixed = Net(num_classes=3, in_channels=3, **card["arch_kwargs"])
    fixed.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    # the card is enough to load it again without --arch (the sidecar names arch and kwargs)
    again = load_model(out / "model.safetensors", card["arch"], 3, 3, card["arch_kwargs"])
    assert torch.equal(again.head.weight, fixed.head.weight)
    # suspects takes the same form, and reads the card when --arch is left out
    code = main(["suspects", "--model", str(out / "model.safetensors"), "--data", str(tmp_path / "data.npz"),
                 "--flagged", str(tmp_path / "flagged.txt"), "--k", "3", "--out", str(tmp_path / "sus"),
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err


def test_cli_errors_are_one_line(usermod, tmp_path, capsys):
    net = build_arch(f"{usermod}:Net", 3, 3, {})
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "m.safetensors"))
    images, labels = _blobs(12)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    (tmp_path / "flagged.txt").write_text("1\n")
    base = ["fix", "--model", str(tmp_path / "m.safetensors"), "--data", str(tmp_path / "data.npz"), "--flagged",
            str(tmp_path / "flagged.txt"), "--out", str(tmp_path / "o"), "--quiet", "--device", "cpu"]
    for extra, message in ((["--arch", "nope_mod_abc:Net"], "expected an importable module"),
                           (["--arch", f"{usermod}:Net", "--arch-kwargs", "{a: [1"], "not valid YAML"),
                           (["--arch", f"{usermod}:Net", "--arch-kwargs", "{width: 5}"], "shape mismatch")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, err
