"""The PyTorch peer of `frugal distill` on the same IDX files: the teacher and student CNNs of
issue #5 trained with PyTorch's plain recipe (Adam, constant learning rate, batch 128, seeded
shuffle), the student on labels, distilled (alpha*T^2*KL + (1-alpha)*CE), or distilled with
attention transfer added (Zagoruyko & Komodakis 2017, the weight decaying to 0). Prints one
JSON line per run: test accuracy and training samples/s (teacher forward included when
distilling), and the teacher's inference images/s at batch 256.

  python bench/cnn_torch.py DATA_DIR THREADS EPOCHS SEEDS
"""
import gzip, json, os, struct, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def idx(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = [struct.unpack(">I", data[4 + 4 * i:8 + 4 * i])[0] for i in range(magic & 0xFF)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def find(d, stem):
    for name in os.listdir(d):
        if name.startswith(stem):
            return os.path.join(d, name)
    raise SystemExit(f"no {stem}* in {d}")


def net(c1, c2, hidden):
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 49, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def blocks(model, x):
    """The logits and each conv block's output (after its max-pool)."""
    outs = []
    for m in model:
        x = m(x)
        if isinstance(m, nn.MaxPool2d):
            outs.append(x)
    return x, outs


def attention(a):
    """Zagoruyko & Komodakis's attention map: sum over channels of a^2, L2-normalised per image."""
    return F.normalize(a.pow(2).sum(1).flatten(1), dim=1)


def train(model, x, y, epochs, seed, teacher=None, temperature=4.0, alpha=0.7, attention_weight=None):
    """With `attention_weight` (beta), attention transfer is added with beta falling linearly to 0
    over the run (`frugal distill --attention-weight beta --attention-decay`)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    n, seen, t0 = len(x), 0, time.perf_counter()
    total, step = epochs * ((n + 127) // 128), 0
    for _ in range(epochs):
        for b in torch.randperm(n, generator=g).split(128):
            xb, yb = x[b], y[b]
            s, sb = blocks(model, xb)
            loss = F.cross_entropy(s, yb)
            if teacher is not None:
                with torch.no_grad():
                    t, tb = blocks(teacher, xb)
                kl = F.kl_div(F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1),
                              reduction="batchmean", log_target=True)
                loss = alpha * temperature ** 2 * kl + (1 - alpha) * loss
                if attention_weight is not None:
                    beta = attention_weight * (1 - step / total)
                    loss = loss + sum(beta / 2 * (attention(a) - attention(c)).pow(2).mean()
                                      for a, c in zip(sb, tb))
            step += 1
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(b)
    return seen / (time.perf_counter() - t0)


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    t0 = time.perf_counter()
    pred = torch.cat([model(b).argmax(1) for b in x.split(256)])
    ips = len(x) / (time.perf_counter() - t0)
    model.train()
    return 100.0 * (pred == y).float().mean().item(), ips


def main():
    d, threads, epochs, seeds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    load = lambda s: torch.from_numpy(idx(find(d, s)).astype(np.float32) / 255.0).unsqueeze(1)
    x, xt = load("train-images"), load("t10k-images")
    y = torch.from_numpy(idx(find(d, "train-labels")).astype(np.int64))
    yt = torch.from_numpy(idx(find(d, "t10k-labels")).astype(np.int64))
    out = lambda **kw: print(json.dumps(kw), flush=True)
    torch.manual_seed(0)
    teacher = net(32, 64, 128)
    sps = train(teacher, x, y, epochs, 0)
    acc, ips = accuracy(teacher, xt, yt)
    out(run="teacher", seed=0, accuracy_pct=acc, samples_per_second=sps, images_per_second=ips)
    teacher.eval()
    # Labels; Hinton's loss (T = 4, alpha = 0.7); attention transfer (T = 1, alpha = 0.5, beta =
    # 1000 decaying), as the Frugal rows of bench/distill-cnn.sh.
    runs = (("student-labels", None, {}), ("student-distilled", teacher, {}),
            ("student-attention", teacher, dict(temperature=1.0, alpha=0.5, attention_weight=1000.0)))
    for seed in range(seeds):
        for name, t, kw in runs:
            torch.manual_seed(seed)
            s = net(8, 16, 32)
            sps = train(s, x, y, epochs, seed, t, **kw)
            acc, _ = accuracy(s, xt, yt)
            out(run=name, seed=seed, accuracy_pct=acc, samples_per_second=sps)


if __name__ == "__main__":
    main()
