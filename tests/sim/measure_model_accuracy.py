"""Measurement, not a test: the statistical model against the exact array model (= the RTL)
over 10 seeds per case, on the layers and densities of ``test_perf.py::
test_statistical_vs_exact_array_model`` (dense cases left out: equal by construction).

    .venv/bin/python tests/sim/measure_model_accuracy.py [SEEDS]      # default 10

Prints per case the model, the exact mean, the error and the standard error of the exact
mean, then the count within 2 % (issue 18 item 1; docs/benchmarks.md "Model accuracy").
"""
import sys, numpy as np
sys.path.insert(0,"tests/sim")
from sparseforge.sim.perf import model as perf
from sparseforge.gen.config import preset
from sparseforge.gen.network import parse_network
def conv(cin, cout, k, s, p, hw):
    net = parse_network({"input": [cin, hw, hw], "layers": [
        {"kind": "conv", "name": f"c{cin}-{cout}-k{k}s{s}", "cout": cout, "kernel": k,
         "stride": s, "padding": p}]})
    return net.compute[0]
ARRAY_2X2 = preset("tiny").replace(macs_per_pe=4, max_row_len=16, k_max=5, psum_buf_depth=64, act_buf_depth=4096)
ARRAYS = {"2x2": ARRAY_2X2, "1x1": ARRAY_2X2.replace(pe_rows=1, pe_cols=1)}
LAYERS = [conv(8, 8, 3, 1, 1, 12), conv(8, 8, 3, 2, 1, 12), conv(8, 6, 1, 1, 0, 10), conv(3, 8, 3, 1, 1, 8)]
CASES = [(0.5, None), (0.1, None), (1.0, (2, 8)), (0.3, (2, 8))]
seeds = tuple(range(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
errs=[]
for an,cfg in ARRAYS.items():
  for ph in ("fp","bp","wg"):
    for lay in LAYERS:
      for d,nm in CASES:
        if nm and (ph=="wg" or lay.cin%nm[1] or lay.cout%nm[1]): continue
        r=perf.validate_against_exact(lay,ph,cfg,operand_density=d,nm=nm,seeds=seeds)
        se=r["exact_sd"]/np.sqrt(len(seeds))/r["exact"]
        errs.append(r["rel_err"])
        print(f"{an} {ph} {lay.name:13s} d{d} nm{nm}: model {r['model']:.0f} exact {r['exact']:.1f} err {100*r['rel_err']:+.2f}% (se of mean {100*se:.2f}%)", flush=True)
e=np.abs(errs); print("n",len(e),"max",e.max(),"mean",e.mean(),"within2%",(e<=0.02).sum())
