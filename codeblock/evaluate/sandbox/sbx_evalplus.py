"""evalplus 0.3.1's own checker, run inside the sandbox.

Two job formats (the pipeline side is `codeblock/evaluate/evalplus_plan.py`):
- `evalplus_gt`: the canonical solution (trusted) computes the expected outputs of the base and
  plus inputs and each input's running time, with evalplus's `trusted_exec` exactly as evalplus's
  `get_groundtruth` does. The outputs travel back pickled and base64-encoded; the pipeline never
  unpickles them, it only hands them to later `evalplus` jobs.
- `evalplus`: one candidate against ONE input set (base or plus, separate programs as in evalplus),
  through evalplus's `unsafe_execute` (its reliability guard, which caps the address space at
  EVALPLUS_MAX_MEMORY_BYTES once the data is loaded, per-input `time_limit`, special
  oracles, exact / type / `np.allclose(atol)` comparison). The status is derived from the shared
  state exactly as `untrusted_check` derives it; a program that dies before reporting is
  classified by the executor as evalplus does ("timeout").

Inputs arrive pickled from the pipeline (already deserialized with evalplus's
`mbpp_deserialize_inputs`), so tuples, sets and complex numbers are what evalplus passes.
"""

import base64
import pickle


def _load(b64):
    return pickle.loads(base64.b64decode(b64))


def _dump(obj):
    return base64.b64encode(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")


class _Shared:
    """Stands in for multiprocessing.Value: this process IS the checked process."""

    def __init__(self, value):
        self.value = value


def ground_truth(job):
    from evalplus.gen.util import trusted_exec

    ep = job["evalplus"]
    data = {}
    for part in ("base", "plus"):
        out, times = trusted_exec(job["program"], _load(ep[f"{part}_inputs"]), job["entry_point"],
                                  record_time=True, output_not_none=bool(ep.get("output_not_none")))
        data[part] = _dump(out)
        data[f"{part}_time"] = [float(t) for t in times]
    return "passed", None, "", data


def check(job):
    import gc

    import evalplus.eval as E

    ep = job["evalplus"]
    inputs, expected = _load(ep.pop("inputs")), _load(ep.pop("expected"))
    gc.collect()  # the encoded copies are gone before the guard caps the address space
    stat, progress = _Shared(E._UNKNOWN), _Shared(0)
    details = [False] * len(inputs)
    try:
        E.unsafe_execute(ep["dataset"], job["entry_point"], job["program"], inputs, expected, ep["time_limits"],
                         ep["atol"], ep["fast_check"], stat, details, progress)
    except BaseException:  # evalplus's child would die here; what it had recorded still counts
        pass
    status = E._mapping.get(stat.value) or E.TIMEOUT
    det = [bool(d) for d in details[:progress.value]]
    if status == E.PASS and (len(det) != len(inputs) or not all(det)):
        status = E.FAIL
    data = {"evalplus": status, "n_checked": len(det)}
    if status == E.PASS:
        return "passed", None, "", data
    bad = next((i for i, d in enumerate(det) if not d), len(det))
    return "failed", f"evalplus_{status}", f"{ep.get('part', '')} input #{bad} of {len(inputs)} failed", data


def warm():
    """Import evalplus's checker once in the fork server (every fork inherits it), if installed."""
    try:
        import evalplus.eval  # noqa: F401
        import evalplus.gen.util  # noqa: F401
    except ImportError:
        pass


def run(job):
    return ground_truth(job) if job["format"] == "evalplus_gt" else check(job)
