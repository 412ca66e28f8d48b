"""Regenerate the benchmark networks ``gen/networks/{alexnet,vgg16,resnet18,resnet50}-*.yaml``
(run once; the YAML files are the source of truth that :func:`sparseforge.gen.network.load_network`
loads and validates).

``python -m sparseforge.gen.netgen`` rewrites the eight files. The layer shapes follow the cited
model definitions; every file names its source in its header comment. The files use the one
network schema of :mod:`sparseforge.gen.network`: conv/fc layers (``cin`` as a chain check,
``in``: the tensor read, ``bn``, residual ``add``, ``relu``), each pool a ``maxpool`` /
``avgpool`` layer of its own named ``<layer>.pool`` (the name ``in`` / ``add`` then use).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent / "networks"

SOURCES = {
    "alexnet-imagenet": (
        "AlexNet, ImageNet form, 3x227x227 input. Shapes: Krizhevsky, Sutskever, Hinton, \"ImageNet\n"
        "# Classification with Deep Convolutional Neural Networks\", NIPS 2012, Fig. 2 / Sec. 3.5 (96-256-384-384-256\n"
        "# kernels, 11x11/4 then 5x5, 3x3; overlapping 3x3/2 max-pools after conv1, conv2, conv5; FC 4096-4096-1000).\n"
        "# The paper's two-GPU grouping (conv2, conv4, conv5 see half the channels) is NOT modelled: one\n"
        "# tower, ungrouped (as Caffe's single-GPU variants and torchvision.models.alexnet do). LRN omitted\n"
        "# (no MACs). Padding as in Caffe bvlc_alexnet (conv1 0, conv2 2, conv3-5 1)."),
    "alexnet-cifar": (
        "AlexNet, CIFAR form, 3x32x32 input (*ours*: there is no canonical CIFAR AlexNet). Channel widths\n"
        "# and FC widths of torchvision.models.alexnet (64-192-384-256-256, FC 4096-4096), every conv 3x3/1\n"
        "# pad 1, 2x2/2 max-pools after conv1, conv2, conv5 (32 -> 16 -> 8 -> 4), 10 classes."),
    "vgg16-imagenet": (
        "VGG-16, ImageNet form, 3x224x224. Shapes: Simonyan & Zisserman, \"Very Deep Convolutional\n"
        "# Networks for Large-Scale Image Recognition\", ICLR 2015, Table 1 configuration D; identical to\n"
        "# torchvision.models.vgg16 (cfg 'D', no batch norm): 3x3/1 pad 1 convs, 2x2/2 max-pools, FC\n"
        "# 25088-4096-4096-1000."),
    "vgg16-cifar": (
        "VGG-16, CIFAR form, 3x32x32. Conv stack of configuration D (Simonyan & Zisserman 2015) on 32x32\n"
        "# as in kuangliu/pytorch-cifar models/vgg.py (VGG('VGG16')): 5 max-pools -> 512x1x1, one FC\n"
        "# 512 -> 10. That file adds batch norm; we keep the paper's VGG without it (bn: false)."),
    "resnet18-imagenet": (
        "ResNet-18, ImageNet form, 3x224x224. Shapes: He et al., \"Deep Residual Learning for Image\n"
        "# Recognition\", CVPR 2016, Table 1; torchvision.models.resnet18 (BasicBlock [2,2,2,2]; conv1 7x7/2\n"
        "# pad 3, maxpool 3x3/2 pad 1, downsample = 1x1/2 conv + BN, global average pool, FC 512-1000)."),
    "resnet18-cifar": (
        "ResNet-18, CIFAR form, 3x32x32: kuangliu/pytorch-cifar models/resnet.py ResNet18() (conv1\n"
        "# 3x3/1 pad 1, no max-pool, BasicBlock [2,2,2,2] at 64-128-256-512, 1x1/2 shortcut conv + BN,\n"
        "# 4x4 average pool, FC 512-10)."),
    "resnet50-imagenet": (
        "ResNet-50, ImageNet form, 3x224x224. Shapes: He et al. CVPR 2016 Table 1; torchvision\n"
        "# .models.resnet50 (Bottleneck [3,4,6,3], \"v1.5\": the stride sits on the 3x3 conv; downsample\n"
        "# 1x1 conv + BN on the first block of each stage; global average pool, FC 2048-1000)."),
    "resnet50-cifar": (
        "ResNet-50, CIFAR form, 3x32x32: kuangliu/pytorch-cifar models/resnet.py ResNet50() (conv1 3x3/1,\n"
        "# no max-pool, Bottleneck [3,4,6,3] with the stride on the 3x3 conv, 1x1 shortcut conv + BN,\n"
        "# 4x4 average pool, FC 2048-10)."),
}


class _Net:
    def __init__(self, c, h, w):
        self.layers, self.shape, self.last = [], (c, h, w), "input"
        self.input_hw = (h, w)

    @staticmethod
    def _out(h, k, s, p):
        return (h + 2 * p - k) // s + 1

    def conv(self, name, cout, k, s=1, p=0, *, src=None, bn=False, relu=True, pool=None,
             add=None, shape=None):
        """A conv layer (and its pool layer); returns the name of the tensor it leaves."""
        c, h, w = shape or self.shape
        d = {"kind": "conv", "name": name}
        if src is not None:
            d["in"] = src
        d.update(cin=c, cout=cout, kernel=k, stride=s, padding=p, bn=bn, relu=relu)
        if add:
            d["add"] = add
        self.layers.append(d)
        ho, wo, last = self._out(h, k, s, p), self._out(w, k, s, p), name
        if pool:
            last = f"{name}.pool"
            if pool.get("global"):
                self.layers.append({"kind": "avgpool", "name": last, "global": True})
                ho = wo = 1
            else:
                kind = "maxpool" if pool["type"] == "max" else "avgpool"
                self.layers.append({"kind": kind, "name": last, "kernel": pool["k"],
                                    "stride": pool["stride"], "padding": pool["padding"]})
                ho, wo = (self._out(ho, pool["k"], pool["stride"], pool["padding"]),
                          self._out(wo, pool["k"], pool["stride"], pool["padding"]))
        self.shape, self.last = (cout, ho, wo), last
        return last

    def fc(self, name, cout, relu=True):
        c, h, w = self.shape
        self.layers.append({"kind": "fc", "name": name, "cin": c * h * w, "cout": cout,
                            "bn": False, "relu": relu})
        self.shape, self.last = (cout, 1, 1), name


MAX3 = {"type": "max", "k": 3, "stride": 2, "padding": 0}
MAX2 = {"type": "max", "k": 2, "stride": 2, "padding": 0}


def alexnet(size, classes):
    """AlexNet: the ImageNet form (227x227, 11x11/4 and 5x5 convs, 3x3/2 max-pools) or the CIFAR
    form (32x32, 3x3/1 convs with torchvision's widths, 2x2/2 max-pools); pools after conv1,
    conv2 and conv5."""
    imagenet = size == 227
    n = _Net(3, size, size)
    convs = [(96, 11, 4, 0), (256, 5, 1, 2)] if imagenet else [(64, 3, 1, 1), (192, 3, 1, 1)]
    convs += [(384, 3, 1, 1), (384 if imagenet else 256, 3, 1, 1), (256, 3, 1, 1)]
    for i, (cout, k, s, p) in enumerate(convs, start=1):
        n.conv(f"conv{i}", cout, k, s, p, pool=(MAX3 if imagenet else MAX2) if i in (1, 2, 5)
               else None)
    n.fc("fc6", 4096)
    n.fc("fc7", 4096)
    n.fc("fc8", classes, relu=False)
    return n


def vgg16(size, classes):
    n = _Net(3, size, size)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    block, idx = 1, 1
    for i, v in enumerate(cfg):
        if v == "M":
            continue
        pool = MAX2 if i + 1 < len(cfg) and cfg[i + 1] == "M" else None
        n.conv(f"conv{block}_{idx}", v, 3, 1, 1, pool=pool)
        if pool:
            block, idx = block + 1, 1
        else:
            idx += 1
    if size == 224:
        n.fc("fc6", 4096)
        n.fc("fc7", 4096)
        n.fc("fc8", classes, relu=False)
    else:
        n.fc("fc", classes, relu=False)
    return n


def resnet(size, blocks, bottleneck, classes):
    n = _Net(3, size, size)
    if size == 224:
        n.conv("conv1", 64, 7, 2, 3, bn=True, pool={"type": "max", "k": 3, "stride": 2,
                                                     "padding": 1})
    else:
        n.conv("conv1", 64, 3, 1, 1, bn=True)
    exp = 4 if bottleneck else 1
    for s, (width, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for b in range(count):
            stride = 2 if (s > 1 and b == 0) else 1
            src, shape = n.last, n.shape
            pre = f"layer{s}.{b}"
            short = src
            if stride != 1 or shape[0] != width * exp:
                short = n.conv(f"{pre}.downsample", width * exp, 1, stride, 0, src=src, bn=True,
                               relu=False, shape=shape)
            last_pool = ({"type": "avg", "global": True}
                         if s == 4 and b == count - 1 else None)
            if bottleneck:
                n.conv(f"{pre}.conv1", width, 1, 1, 0, src=src, bn=True, shape=shape)
                n.conv(f"{pre}.conv2", width, 3, stride, 1, bn=True)
                n.conv(f"{pre}.conv3", width * 4, 1, 1, 0, bn=True, add=short, pool=last_pool)
            else:
                n.conv(f"{pre}.conv1", width, 3, stride, 1, src=src, bn=True, shape=shape)
                n.conv(f"{pre}.conv2", width, 3, 1, 1, bn=True, add=short, pool=last_pool)
    n.fc("fc", classes, relu=False)
    return n


NETWORKS = {
    "alexnet-imagenet": lambda: alexnet(227, 1000),
    "alexnet-cifar": lambda: alexnet(32, 10),
    "vgg16-imagenet": lambda: vgg16(224, 1000),
    "vgg16-cifar": lambda: vgg16(32, 10),
    "resnet18-imagenet": lambda: resnet(224, (2, 2, 2, 2), False, 1000),
    "resnet18-cifar": lambda: resnet(32, (2, 2, 2, 2), False, 10),
    "resnet50-imagenet": lambda: resnet(224, (3, 4, 6, 3), True, 1000),
    "resnet50-cifar": lambda: resnet(32, (3, 4, 6, 3), True, 10),
}


def _flow(d):
    return "{" + ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}"
                           for k, v in d.items()) + "}"


def render(name) -> str:
    net = NETWORKS[name]()
    network, dataset = name.split("-")
    c, h, w = net.layers[0]["cin"], net.input_hw[0], net.input_hw[1]
    lines = [f"# {SOURCES[name]}",
             "# Generated by python -m sparseforge.gen.netgen; validated by "
             "sparseforge.gen.network.load_network.",
             "# Batch: 1 image per iteration (the performance model scales by `batch`).",
             f"name: {name}", f"network: {network}", f"dataset: {dataset}",
             f"input: [{c}, {h}, {w}]", "batch: 1", "layers:"]
    lines += [f"  - {_flow(d)}" for d in net.layers]
    return "\n".join(lines) + "\n"


def main():
    for name in NETWORKS:
        (HERE / f"{name}.yaml").write_text(render(name))
        print(f"wrote {name}.yaml")


if __name__ == "__main__":
    main()
