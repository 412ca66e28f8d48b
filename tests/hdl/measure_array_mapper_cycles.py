"""Measure the mapper-fed PEArray's cycles against the reference on random layers (not a test;
docs/array_mapper.md quotes its output).

    .venv/bin/python tests/hdl/measure_array_mapper_cycles.py SEED COUNT

Per layer: cycles, reference, WG scratchpad words, the read floor (most element reads of one
read port) and ``cycles - max(1.10 * reference, floor) - words`` (the excess that
``MAPPER_READ_SLACK`` bounds) and ``cycles - 1.10 * reference - words``.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import test_array_mapper as T  # noqa: E402

from sparseforge.gen.mapper import array as am  # noqa: E402


def main(seed, count):
    rng = np.random.default_rng(seed)
    print(f"seed={seed}")
    worst = worst_ref = -1e9
    for n in range(count):
        mode, p = T._random_array_layer(rng)
        job, ref, fields, mems, _ = T.make_layer(mode, T.ARRAY_CFG, **p)
        got, res = T.run_with_array(T.ARRAY_CFG, job, fields, mems)
        assert np.array_equal(job.assemble(got), ref)
        model = am.cycles(job).cycles
        cyc, words = res["array_cycles"], T._dense_words(res)
        floor = max(v for k, v in res["reads"].items() if k[0] in ("act", "mask"))
        ex = cyc - max(1.10 * model, floor) - words
        ex_ref = cyc - 1.10 * model - words
        worst, worst_ref = max(worst, ex), max(worst_ref, ex_ref)
        print(f"{n} {mode} {p}: cycles {cyc} reference {model} ratio {cyc / model:.2f} "
              f"words {words} floor {floor} excess {ex:.1f} (over 1.10 x reference "
              f"{ex_ref:.1f})", flush=True)
    print(f"worst excess {worst:.1f}, over 1.10 x reference {worst_ref:.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
