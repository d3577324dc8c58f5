#!/usr/bin/python3
"""bench/torch_bench.py: the PyTorch side of `ninja bench` (bench/run drives it; bench/nfc_bench.c
is the nfc side). Run with Debian's /usr/bin/python3 and python3-torch (CPU, float32, eager).

  torch_bench.py --kind realnvp|maf|glow --D D --K K --H H [--batch B] [--threads T]
                 [--time S] [--reps R]

Builds the same model as the .flow file of the same (kind, D, K, H) (bench/models/*.flow,
examples/glow_dense.flow), with nfc's parameter order, shapes ([in, out] weights, x @ W + b) and
initialization scheme (compiler/init.c, ported below: counter-based uniforms from (seed,
parameter index, element); hidden dense weights U(-1, 1)/sqrt(fan_in), everything else zero).
Prints the same "key value" lines as nfc_bench: compile_ms (model construction and
initialization), flops_fwd, param checksums, train_sps (forward + backward + gradient clipping
at norm 10 + torch.optim.AdamW), logprob_sps and sample_sps (under torch.no_grad), maxrss_kb.
Each throughput is the best of R repetitions of a timed loop of about S seconds.
"""
import argparse
import math
import resource
import sys
import time

import numpy as np
import torch

LOG2PI = math.log(2 * math.pi)
M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (resource.getpagesize() // 1024)


# ---- nfc's initializer (compiler/init.c), vectorized ----
def mix64(z):
    with np.errstate(over="ignore"):
        z = z ^ (z >> np.uint64(30))
        z = z * np.uint64(0xBF58476D1CE4E5B9)
        z = z ^ (z >> np.uint64(27))
        z = z * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def nfc_uniform(seed, p, numel):
    """u in [-1, 1) for parameter index p, elements 0..numel-1, as init.c draws them"""
    e = np.arange(numel, dtype=np.uint64)
    inner = mix64((np.uint64(p) << np.uint64(40)) ^ e ^ np.uint64(0x5BD1E995))
    h = mix64(np.uint64(seed) ^ inner)
    return ((h >> np.uint64(11)).astype(np.float64) * 2.0**-53) * 2.0 - 1.0


class Params:
    """nfc's flat parameter list: every parameter gets the next index, in the order sema adds them"""

    def __init__(self, seed=0):
        self.seed = seed
        self.list = []  # (name, tensor, is_dense_w)

    def add(self, name, shape, fan_in=None, dense_w=False):
        numel = int(np.prod(shape))
        p = len(self.list)
        if fan_in is not None:
            v = nfc_uniform(self.seed, p, numel) / math.sqrt(fan_in if fan_in > 0 else 1)
        else:
            v = np.zeros(numel)
        t = torch.nn.Parameter(torch.tensor(v.reshape(shape), dtype=torch.float32))
        self.list.append((name, t, dense_w))
        return t


def mlp_params(P, prefix, widths, made=False):
    """dense layers in -> widths[1] -> ... ; the last layer starts at zero (init.c/sema.c)"""
    ws, bs = [], []
    for k in range(len(widths) - 1):
        last = k == len(widths) - 2
        ws.append(P.add(f"{prefix}.dense{k}.w", (widths[k], widths[k + 1]), None if last else widths[k], True))
        bs.append(P.add(f"{prefix}.dense{k}.b", (widths[k + 1],)))
    return ws, bs


def run_net(x, ws, bs, masks=None):
    n = len(ws)
    for k in range(n):
        w = ws[k] * masks[k] if masks is not None else ws[k]
        x = torch.addmm(bs[k], x, w)
        if k < n - 1:
            x = torch.relu(x)
    return x


def made_masks(D, hidden):
    """nfc's MADE degrees: input j -> j+1, hidden k -> (k mod (D-1)) + 1, output o -> (o mod D) + 1;
    hidden connections need deg_in <= deg_out, output connections deg_in < deg_out"""
    degs = [np.arange(D) + 1] + [np.arange(h) % max(D - 1, 1) + 1 for h in hidden]
    out = np.arange(2 * D) % D + 1
    masks = []
    for k in range(len(hidden)):
        masks.append(torch.tensor((degs[k][:, None] <= degs[k + 1][None, :]).astype(np.float32)))
    masks.append(torch.tensor((degs[-1][:, None] < out[None, :]).astype(np.float32)))
    return masks


def soft_clamp(r, c=2.0):
    return c * torch.tanh(r / c)


def base_logp(z):
    return -0.5 * (z * z).sum(1) - 0.5 * z.shape[1] * LOG2PI


class RealNVP:
    """repeat K { affine_coupling mask=alternate net=mlp(H, H); reverse } (D even)"""

    def __init__(self, D, K, H):
        assert D % 2 == 0
        self.D, self.K = D, K
        self.P = Params()
        n = D // 2
        self.nets = [mlp_params(self.P, f"layer{2 * k + 1}.net", [n, H, H, 2 * n]) for k in range(K)]

    def log_prob(self, x):
        ld = 0
        n = self.D // 2
        for ws, bs in self.nets:
            xc, xt = x[:, 0::2], x[:, 1::2]  # alternate: condition on even, transform odd
            h = run_net(xc, ws, bs)
            ls = soft_clamp(h[:, :n])
            yt = xt * torch.exp(ls) + h[:, n:]
            ld = ld + ls.sum(1)
            x = torch.stack((xc, yt), 2).reshape(x.shape[0], self.D).flip(1)  # merge, reverse
        return base_logp(x) + ld

    def sample(self, n_rows, temperature=1.0):
        z = torch.randn(n_rows, self.D) * temperature
        lp = base_logp(z)
        x = z
        n = self.D // 2
        for ws, bs in reversed(self.nets):
            x = x.flip(1)
            yc, yt = x[:, 0::2], x[:, 1::2]
            h = run_net(yc, ws, bs)
            ls = soft_clamp(h[:, :n])
            xt = (yt - h[:, n:]) * torch.exp(-ls)
            lp = lp + ls.sum(1)
            x = torch.stack((yc, xt), 2).reshape(n_rows, self.D)
        return x, lp


class MAF:
    """repeat K { maf net=made(H, H); reverse }"""

    def __init__(self, D, K, H):
        self.D, self.K = D, K
        self.P = Params()
        self.masks = made_masks(D, [H, H])
        self.nets = [mlp_params(self.P, f"layer{2 * k + 1}.made", [D, H, H, 2 * D]) for k in range(K)]

    def log_prob(self, x):
        ld = 0
        D = self.D
        for ws, bs in self.nets:
            h = run_net(x, ws, bs, self.masks)
            ls = soft_clamp(h[:, :D])
            x = (x * torch.exp(ls) + h[:, D:]).flip(1)
            ld = ld + ls.sum(1)
        return base_logp(x) + ld

    def sample(self, n_rows, temperature=1.0):
        z = torch.randn(n_rows, self.D) * temperature
        lp = base_logp(z)
        y = z
        D = self.D
        for ws, bs in reversed(self.nets):
            y = y.flip(1)
            x = torch.zeros_like(y)
            for _ in range(D):  # dimension d is exact after d + 1 passes
                h = run_net(x, ws, bs, self.masks)
                ls = soft_clamp(h[:, :D])
                x = (y - h[:, D:]) * torch.exp(-ls)
            lp = lp + ls.sum(1)
            y = x
        return y, lp


class Glow:
    """repeat K { actnorm; linear lu; affine_coupling mask=half net=mlp(H, H) scaling=sigmoid }"""

    def __init__(self, D, K, H):
        self.D, self.K = D, K
        self.P = Params()
        self.c = D // 2  # half: condition on j < floor(D/2)
        # sema adds the layers' own parameters first, then every conditioner net's
        own = []
        for k in range(K):
            a_s = self.P.add(f"layer{3 * k + 1}.log_scale", (D,))
            a_b = self.P.add(f"layer{3 * k + 1}.bias", (D,))
            lu = self.P.add(f"layer{3 * k + 2}.lu", (D, D))
            lb = self.P.add(f"layer{3 * k + 2}.bias", (D,))
            own.append((a_s, a_b, lu, lb))
        self.layers = [own[k] + (mlp_params(self.P, f"layer{3 * k + 3}.net", [self.c, H, H, 2 * (D - self.c)]),)
                       for k in range(K)]

    @staticmethod
    def lu_factors(lu):
        L = torch.tril(lu, -1) + torch.eye(lu.shape[0])
        U = torch.triu(lu, 1) + torch.diag(torch.exp(torch.diagonal(lu)))
        return L, U

    def log_prob(self, x):
        ld = 0
        c, t = self.c, self.D - self.c
        for a_s, a_b, lu, lb, (ws, bs) in self.layers:
            x = x * torch.exp(a_s) + a_b
            L, U = self.lu_factors(lu)
            x = torch.addmm(lb, x, (L @ U).t())  # y = L U x + bias
            xc, xt = x[:, :c], x[:, c:]
            h = run_net(xc, ws, bs)
            r = h[:, :t] + 2.0
            yt = xt * torch.sigmoid(r) + h[:, t:]
            x = torch.cat((xc, yt), 1)
            ld = ld + a_s.sum() + torch.diagonal(lu).sum() + torch.nn.functional.logsigmoid(r).sum(1)
        return base_logp(x) + ld

    def sample(self, n_rows, temperature=1.0):
        z = torch.randn(n_rows, self.D) * temperature
        lp = base_logp(z)
        x = z
        c, t = self.c, self.D - self.c
        for a_s, a_b, lu, lb, (ws, bs) in reversed(self.layers):
            yc, yt = x[:, :c], x[:, c:]
            h = run_net(yc, ws, bs)
            r = h[:, :t] + 2.0
            xt = (yt - h[:, t:]) / torch.sigmoid(r)
            lp = lp + torch.nn.functional.logsigmoid(r).sum(1)
            x = torch.cat((yc, xt), 1)
            L, U = self.lu_factors(lu)
            v = torch.linalg.solve_triangular(L, (x - lb).t(), upper=False, unitriangular=True)
            x = torch.linalg.solve_triangular(U, v, upper=True).t()
            lp = lp + torch.diagonal(lu).sum()
            x = (x - a_b) * torch.exp(-a_s)
            lp = lp + a_s.sum()
        return x, lp


KINDS = {"realnvp": RealNVP, "maf": MAF, "glow": Glow}


def best_time(f, target, reps):
    t0 = time.perf_counter()
    f()
    warm = 1
    while time.perf_counter() - t0 < 0.05 and warm < 1000:
        f()
        warm += 1
    one = (time.perf_counter() - t0) / warm
    iters = max(1, int(target / one)) if one > 0 else 1000
    best = float("inf")
    for _ in range(reps):
        a = time.perf_counter()
        for _ in range(iters):
            f()
        best = min(best, (time.perf_counter() - a) / iters)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", required=True, choices=sorted(KINDS))
    ap.add_argument("--D", type=int, required=True)
    ap.add_argument("--K", type=int, required=True)
    ap.add_argument("--H", type=int, required=True)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time", type=float, default=0.3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--train-only", action="store_true", help="skip log_prob and sampling (memory-vs-depth table)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}")
    print(f"threads {torch.get_num_threads()}")
    print(f"rss0_kb {rss_kb()}")

    t0 = time.perf_counter()
    model = KINDS[a.kind](a.D, a.K, a.H)
    print(f"compile_ms {1e3 * (time.perf_counter() - t0):.2f}")
    params = [t for _, t, _ in model.P.list]
    flat = torch.cat([t.detach().reshape(-1) for t in params]).double().numpy()
    k = np.arange(flat.size) % 1000
    print(f"params {flat.size}")
    print(f"flops_fwd {sum(2 * t.shape[0] * t.shape[1] for _, t, dw in model.P.list if dw)}")
    print(f"param_sum {flat.sum():.10e}\nparam_sumsq {(flat * flat).sum():.10e}\nparam_sumk {(flat * k).sum():.10e}")

    B = a.batch
    x = torch.randn(B, a.D)
    if not a.train_only:
        with torch.no_grad():
            lp = model.log_prob(x)
            xs, lps = model.sample(B)
            # sanity: the sample's log p equals log_prob of the sample
            print(f"sample_lp_maxrel {((lps - model.log_prob(xs)).abs() / (1 + lps.abs())).max().item():.3g}")

            def f_lp():
                model.log_prob(x)

            def f_sample():
                model.sample(B)

            print(f"logprob_sps {B / best_time(f_lp, a.time, a.reps):.1f}")
            print(f"sample_sps {B / best_time(f_sample, a.time, a.reps):.1f}")

    data = torch.randn(8 * B, a.D)
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    state = {"k": 0, "perm": torch.randperm(8 * B)}

    def f_train():
        k = state["k"] % 8
        if k == 0:
            state["perm"] = torch.randperm(8 * B)
        state["k"] += 1
        xb = data[state["perm"][k * B:(k + 1) * B]]
        loss = -model.log_prob(xb).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        state["loss"] = loss.item()

    f_train()
    f_train()
    print(f"train_sps {B / best_time(f_train, a.time, a.reps):.1f}")
    print(f"train_loss {state['loss']:.6g}")
    print(f"maxrss_kb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
