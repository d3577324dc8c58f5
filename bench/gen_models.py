#!/usr/bin/python3
"""bench/gen_models.py: writes the benchmark's .flow files into bench/models/ (they are
committed; rerun this only to change the set). The PyTorch side (bench/torch_bench.py)
builds the same models from the same (kind, D, K, H) that bench/run passes to both."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

REALNVP = """# RealNVP for the benchmark: {K} affine couplings (alternate mask, tanh scaling with
# clamp 2, the default), each followed by a reverse; conditioner mlp({H}, {H}) with relu.
flow realnvp_d{D}_k{K}_h{H} {{
  input x: f32[{D}]
  base normal

  repeat {K} {{
    affine_coupling mask=alternate net=mlp({H}, {H})
    reverse
  }}
}}
"""

MAF = """# MAF for the benchmark: {K} maf layers (MADE with two hidden layers of {H}, tanh scaling
# with clamp 2, the default), each followed by a reverse.
flow maf_d{D}_k{K}_h{H} {{
  input x: f32[{D}]
  base normal

  repeat {K} {{
    maf net=made({H}, {H})
    reverse
  }}
}}
"""


def main():
    os.makedirs(os.path.join(HERE, "models"), exist_ok=True)
    for D in (2, 8, 64):
        for K in (5, 10):
            for H in (64, 256):
                with open(os.path.join(HERE, "models", f"realnvp_d{D}_k{K}_h{H}.flow"), "w") as f:
                    f.write(REALNVP.format(D=D, K=K, H=H))
    for D in (8, 64):
        with open(os.path.join(HERE, "models", f"maf_d{D}_k5_h128.flow"), "w") as f:
            f.write(MAF.format(D=D, K=5, H=128))


if __name__ == "__main__":
    main()
