"""The PyTorch peer of `frugal tune` for a classifier: the same Frugal teacher's weights
(safetensors, PyTorch's conv layout) loaded into the same network, checked at F32 against
Frugal's accuracy, then quantized by PyTorch's post-training static int8 (fbgemm, conv+ReLU
fused, 1,000 training images for calibration) and dynamic int8 (Linear layers). Prints one
JSON line per model: full test-set accuracy and the serialized state_dict's bytes.

  python bench/cnn_torch_int8.py TEACHER.safetensors FASHION_DIR
"""
import io, json, sys

import numpy as np
import torch
import torch.nn as nn
from safetensors.numpy import load_file

sys.path.insert(0, __import__("os").path.dirname(__file__))
from cnn_torch import find, idx  # noqa: E402


class Net(nn.Module):
    def __init__(self, c1=32, c2=64, hidden=128):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv0, self.relu0, self.pool0 = nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.fc1, self.relu2, self.fc2 = nn.Linear(c2 * 49, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.pool0(self.relu0(self.conv0(x)))
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.relu2(self.fc1(torch.flatten(x, 1)))
        return self.dequant(self.fc2(x))


def size(model):
    b = io.BytesIO()
    torch.save(model.state_dict(), b)
    return b.tell()


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    pred = torch.cat([model(b).argmax(1) for b in x.split(256)])
    return 100.0 * (pred == y).float().mean().item()


def main():
    path, d = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    w = load_file(path)
    m = Net()
    sd = {}
    for name, v in w.items():
        t = torch.from_numpy(v.copy())
        if name.startswith("conv") and name.endswith(".weight"):
            t = t.reshape(t.shape[0], -1, 3, 3)
        sd[name] = t
    m.load_state_dict(sd)
    load = lambda s: torch.from_numpy(idx(find(d, s)).astype(np.float32) / 255.0).unsqueeze(1)
    xt, yt = load("t10k-images"), torch.from_numpy(idx(find(d, "t10k-labels")).astype(np.int64))
    xtr = load("train-images")[:1000]
    print(json.dumps({"model": "pytorch-f32", "accuracy_pct": accuracy(m, xt, yt), "bytes": size(m)}))
    dyn = torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
    print(json.dumps({"model": "pytorch-dynamic-int8", "accuracy_pct": accuracy(dyn, xt, yt), "bytes": size(dyn)}))
    s = Net()
    s.load_state_dict(sd)
    s.eval()
    s.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    torch.ao.quantization.fuse_modules(s, [["conv0", "relu0"], ["conv1", "relu1"], ["fc1", "relu2"]], inplace=True)
    torch.ao.quantization.prepare(s, inplace=True)
    with torch.no_grad():
        for b in xtr.split(250):
            s(b)
    torch.ao.quantization.convert(s, inplace=True)
    print(json.dumps({"model": "pytorch-static-int8", "accuracy_pct": accuracy(s, xt, yt), "bytes": size(s)}))


if __name__ == "__main__":
    main()
