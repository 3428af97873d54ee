"""PyTorch peer for the image side of captioning (issue 29): the same networks seq2seq's
`bench` times on a captioning config, in plain PyTorch with random weights.

* EfficientNet-Lite0 backbone (no squeeze-and-excitation, ReLU6, symmetric k//2 padding, batch
  norm eps 1e-3), 224x224 -> the 7x7x1280 map: forward at batch 32 in eval mode under
  inference_mode, in NCHW and in channels-last (the faster is the peer's figure); and a training
  step with the last FT blocks and the head fine-tuned (the frozen prefix's output is the input,
  as seq2seq caches it; batch norm keeps its running statistics, as in seq2seq).
* The small CNN of configs/flickr8k.yaml (conv3x3-BN-ReLU-maxpool x [32, 64, 128, 256]) at
  96x96: forward, and a training step (batch norm in training mode).

A training step is forward, loss = mean(features^2), backward, Adam (lr 1e-3). Rates are images/s,
the median of `--reps` timed repetitions after two warm-ups.

usage: python torch_image.py [--threads 2] [--batch 32] [--reps 5] [--fine-tune 2] [--json]
"""
import argparse, json, resource, statistics, time
import torch, torch.nn as nn

STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=1e-3)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    def __init__(self, cin, cout, e, k, s):
        super().__init__()
        mid = cin * e
        self.expand = conv_bn(cin, mid, 1) if e != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, k, s, groups=mid)
        self.project = conv_bn(mid, cout, 1, act=False)
        self.skip = s == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.depthwise(self.expand(x)))
        return y + x if self.skip else y


class Lite0(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 32, 3, 2)
        blocks, cin = [], 32
        for e, k, s, cout, r in STAGES:
            for i in range(r):
                blocks.append(MBConv(cin, cout, e, k, s if i == 0 else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = conv_bn(320, 1280, 1)

    def prefix(self, x, n):
        x = self.stem(x)
        for b in self.blocks[:n]:
            x = b(x)
        return x

    def suffix(self, x, n):
        for b in self.blocks[n:]:
            x = b(x)
        return self.head(x)

    def forward(self, x):
        return self.suffix(self.prefix(x, 0), 0)


class SmallCnn(nn.Module):
    def __init__(self, channels=(32, 64, 128, 256)):
        super().__init__()
        layers, cin = [], 3
        for c in channels:
            layers += [nn.Conv2d(cin, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            cin = c
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def timed(fn, reps, batch):
    fn(); fn()
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        rates.append(batch / (time.perf_counter() - t))
    return statistics.median(rates)


def forward_rate(net, x, reps, batch):
    net.eval()
    best = {}
    for fmt, mf in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        net = net.to(memory_format=mf)
        xi = x.contiguous(memory_format=mf)
        with torch.inference_mode():
            best[fmt] = timed(lambda: net(xi), reps, batch)
    return best


def train_rate(forward, params, x, reps, batch):
    opt = torch.optim.Adam(params, lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        y = forward(x)
        (y * y).mean().backward()
        opt.step()
    return timed(step, reps, batch)


def train_formats(net, forward, params, x, reps, batch):
    out = {}
    for fmt, mf in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        net.to(memory_format=mf)
        out[fmt] = train_rate(forward, params, x.contiguous(memory_format=mf), reps, batch)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--fine-tune", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    b = a.batch
    r = {"threads": a.threads, "batch": b, "torch": torch.__version__}

    lite = Lite0()
    x = torch.randn(b, 3, 224, 224)
    r["lite0_forward"] = forward_rate(lite, x, a.reps, b)
    first = len(lite.blocks) - a.fine_tune
    lite.eval()  # frozen batch-norm statistics, as seq2seq fine-tunes
    lite = lite.to(memory_format=torch.contiguous_format)
    with torch.no_grad():  # not inference_mode: its tensors cannot enter autograd
        cached = lite.prefix(x, first)
    params = [p for blk in lite.blocks[first:] for p in blk.parameters()] + list(lite.head.parameters())
    for p in lite.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    r["lite0_fine_tune"] = a.fine_tune
    r["lite0_train"] = train_formats(lite, lambda t: lite.suffix(t, first), params, cached, a.reps, b)

    cnn = SmallCnn()
    xs = torch.randn(b, 3, 96, 96)
    r["cnn_forward"] = forward_rate(cnn, xs, a.reps, b)
    cnn.train()
    r["cnn_train"] = train_formats(cnn, cnn, list(cnn.parameters()), xs, a.reps, b)
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if a.json:
        print(json.dumps(r))
        return
    for k in ("lite0_forward", "lite0_train", "cnn_forward", "cnn_train"):
        v = r[k]
        print(f"{k:16s} nchw {v['nchw']:7.1f}  channels_last {v['channels_last']:7.1f} images/s")
    print(f"peak RSS {r['peak_rss_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
