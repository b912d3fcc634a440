"""The PyTorch reference of the MPL step's memory (BENCHMARKS.md, "Memory of a step"): a WideResNet-28-2 written
after kekmodel/MPL-pytorch's models.py (BN momentum 0.001, in-place LeakyReLU 0.1), and the four steps measured
by measure.py: a supervised step on 240 images, MPL + UDA shaped like MPL-pytorch's train loop (student on x_l +
x_us), the same with the student on x_us only (mpl_tf's shape), and MPL without UDA. Needs torch, which
mpl_tf does not install; not imported by the package or its tests."""
import math
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import record_function

torch.set_num_threads(1)


class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, drop_rate=0.0, activate_before_residual=False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=0.001)
        self.relu1 = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, momentum=0.001)
        self.relu2 = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equalInOut = (in_planes == out_planes)
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(
            in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False) or None
        self.activate_before_residual = activate_before_residual

    def forward(self, x):
        if not self.equalInOut and self.activate_before_residual:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, block, stride, drop_rate=0.0, activate_before_residual=False):
        super().__init__()
        layers = []
        for i in range(int(nb_layers)):
            layers.append(block(i == 0 and in_planes or out_planes, out_planes,
                                i == 0 and stride or 1, drop_rate, activate_before_residual))
        self.layer = nn.Sequential(*layers)

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, num_classes=10, depth=28, widen_factor=2, dropout=0.0, dense_dropout=0.0):
        super().__init__()
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        assert (depth - 4) % 6 == 0
        n = (depth - 4) / 6
        block = BasicBlock
        self.conv1 = nn.Conv2d(3, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], block, 1, dropout, activate_before_residual=True)
        self.block2 = NetworkBlock(n, channels[1], channels[2], block, 2, dropout)
        self.block3 = NetworkBlock(n, channels[2], channels[3], block, 2, dropout)
        self.bn1 = nn.BatchNorm2d(channels[3], momentum=0.001)
        self.relu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        self.drop = nn.Dropout(dense_dropout)
        self.fc = nn.Linear(channels[3], num_classes)
        self.channels = channels[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='leaky_relu')
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                m.bias.data.zero_()

    def forward(self, x):
        out = self.conv1(x)
        out = self.block1(out)
        out = self.block2(out)
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1)
        out = out.view(-1, self.channels)
        return self.fc(self.drop(out))


B, U = 16, 112
CASES = ["supervised", "mpl_hard_uda", "mpl_hard_uda_student_u_only", "mpl_hard"]


# Optional callback: BEFORE_BWD(name, loss) is called just before each .backward()
BEFORE_BWD = None


def _before_bwd(name, loss):
    if BEFORE_BWD is not None:
        BEFORE_BWD(name, loss)


class Phase:
    """record_function label + a hook so saved-tensor accounting knows the phase."""
    current = None

    def __init__(self, name):
        self.name = name
        self.rf = record_function("PHASE::" + name)

    def __enter__(self):
        self.prev = Phase.current
        Phase.current = self.name
        self.rf.__enter__()

    def __exit__(self, *a):
        self.rf.__exit__(*a)
        Phase.current = self.prev


def make_opt(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)


def setup(case, seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    data = dict(
        x_l=torch.randn(B, 3, 32, 32, generator=g),
        y_l=torch.randint(0, 10, (B,), generator=g),
        x_uw=torch.randn(U, 3, 32, 32, generator=g),
        x_us=torch.randn(U, 3, 32, 32, generator=g),
        y_all=torch.randint(0, 10, (B + 2 * U,), generator=g),
    )
    teacher = WideResNet(10, 28, 2, 0.0, 0.2).train()
    t_opt = make_opt(teacher)
    if case == "supervised":
        return dict(data=data, teacher=teacher, t_opt=t_opt)
    student = WideResNet(10, 28, 2, 0.0, 0.2).train()
    s_opt = make_opt(student)
    return dict(data=data, teacher=teacher, t_opt=t_opt, student=student, s_opt=s_opt)


def step_supervised(st):
    d, model, opt = st["data"], st["teacher"], st["t_opt"]
    with Phase("sup_fwd"):
        x = torch.cat((d["x_l"], d["x_uw"], d["x_us"]))  # 240 images
        logits = model(x)
        loss = F.cross_entropy(logits, d["y_all"])
    with Phase("sup_bwd"):
        _before_bwd("supervised_net", loss)
        loss.backward()
    with Phase("sup_step"):
        opt.step()
        opt.zero_grad(set_to_none=True)


def step_mpl(st, uda=True, student_u_only=False, temperature=0.7, threshold=0.6, lambda_u=1.0):
    d = st["data"]
    teacher, student, t_opt, s_opt = st["teacher"], st["student"], st["t_opt"], st["s_opt"]
    x_l, y_l, x_uw, x_us = d["x_l"], d["y_l"], d["x_uw"], d["x_us"]
    with Phase("teacher_fwd"):
        if uda:
            t_images = torch.cat((x_l, x_uw, x_us))       # 240
        else:
            t_images = torch.cat((x_l, x_us))             # 128
        t_logits = teacher(t_images)
        t_logits_l = t_logits[:B]
        if uda:
            t_logits_uw, t_logits_us = t_logits[B:].chunk(2)
        else:
            t_logits_us = t_logits[B:]
        del t_logits
        t_loss_l = F.cross_entropy(t_logits_l, y_l)
        if uda:
            soft_pseudo_label = torch.softmax(t_logits_uw.detach() / temperature, dim=-1)
            max_probs, _ = torch.max(soft_pseudo_label, dim=-1)
            mask = max_probs.ge(threshold).float()
            t_loss_u = torch.mean(-(soft_pseudo_label * torch.log_softmax(t_logits_us, dim=-1)).sum(dim=-1) * mask)
            t_loss_uda = t_loss_l + lambda_u * t_loss_u
        else:
            t_loss_uda = t_loss_l
        # brief: hard pseudo label = argmax of the strong view (detached)
        hard_pseudo_label = torch.argmax(t_logits_us.detach(), dim=-1)
    with Phase("student_fwd"):
        if student_u_only:
            with torch.no_grad():
                s_logits_l = student(x_l)
            s_logits_us = student(x_us)                    # 112 with grad
        else:
            s_images = torch.cat((x_l, x_us))              # 128 with grad
            s_logits = student(s_images)
            s_logits_l = s_logits[:B]
            s_logits_us = s_logits[B:]
            del s_logits
        s_loss_l_old = F.cross_entropy(s_logits_l.detach(), y_l)
        s_loss = F.cross_entropy(s_logits_us, hard_pseudo_label)
    with Phase("student_bwd"):
        _before_bwd("student", s_loss)
        s_loss.backward()
    with Phase("student_step"):
        s_opt.step()
        s_opt.zero_grad(set_to_none=True)
    with Phase("student_nograd_fwd"):
        with torch.no_grad():
            s_logits_l = student(x_l)
        s_loss_l_new = F.cross_entropy(s_logits_l.detach(), y_l)
        dot_product = s_loss_l_old - s_loss_l_new
        t_loss_mpl = dot_product * F.cross_entropy(t_logits_us, hard_pseudo_label)
        t_loss = t_loss_uda + t_loss_mpl
    with Phase("teacher_bwd"):
        _before_bwd("teacher", t_loss)
        t_loss.backward()
    with Phase("teacher_step"):
        t_opt.step()
        t_opt.zero_grad(set_to_none=True)


def run_step(case, st):
    if case == "supervised":
        step_supervised(st)
    elif case == "mpl_hard_uda":
        step_mpl(st, uda=True, student_u_only=False)
    elif case == "mpl_hard_uda_student_u_only":
        step_mpl(st, uda=True, student_u_only=True)
    elif case == "mpl_hard":
        step_mpl(st, uda=False, student_u_only=True)
    else:
        raise ValueError(case)
