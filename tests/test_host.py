"""Host description (host.py), the calibration of the CPU products (calibration.py) and the thread policy
(threads.py): real behaviour with fake timers and synthetic /proc files; nothing here times anything."""
import taming_core as tc
from taming_core.host import FLAGS, host_info


def test_host_info_reads_the_model_name_and_flags_of_a_cpuinfo_file(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
                       "flags\t\t: fpu sse avx2 avx512f amx_tile amx_bf16 avx512_bf16\n\n"
                       "processor\t: 1\nmodel name\t: ignored\n")
    info = host_info(str(cpuinfo))
    assert info["cpu"] == "Intel(R) Xeon(R) Platinum 8481C"
    assert info["flags"] == {name: True for name in FLAGS}
    line = tc.host_line(info)
    assert line.startswith("Intel(R) Xeon(R) Platinum 8481C") and "no " not in line and info["torch"] in line
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t: sse avx2\n")
    line = tc.host_line(host_info(str(cpuinfo)))
    assert "(avx2; no avx512f avx512_bf16 amx_tile amx_bf16)" in line


def test_host_info_without_a_cpuinfo_file_still_names_a_cpu(tmp_path):
    info = host_info(str(tmp_path / "missing"))
    assert info["cpu"] and not any(info["flags"].values()) and info["threads"] >= 1


# ----------------------------------------------------------------------------------------------------------
# calibration.py: which fp32 products a GPT samples with

import copy  # noqa: E402
import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from taming_core import calibration  # noqa: E402
from taming_core.packed import PackedLinear  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # steps of a tiny GPT: one thread on a shared CPU


def tiny_gpt(seed: int = 0) -> tc.GPT:
    torch.manual_seed(seed)
    return tc.GPT(tc.GPTConfig(vocab_size=64, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()


class FakeTimer:
    """Seconds per (path, batch) as given; counts its calls."""

    def __init__(self, seconds: dict):
        self.seconds, self.calls = seconds, 0

    def __call__(self, path: str, batch: int) -> float:
        self.calls += 1
        return self.seconds[path, batch]


# plain faster for one row, packed clearly faster from two rows on (as on the AMD host at a 12 x 512 GPT)
PACKED_FROM_2 = {("plain", 1): 1.0, ("packed", 1): 1.2, ("plain", 2): 2.0, ("packed", 2): 1.5,
                 ("plain", 4): 3.0, ("packed", 4): 2.0}


def test_calibration_picks_the_rows_from_which_packing_keeps_winning():
    assert calibration.calibrate_matmul(tiny_gpt(), FakeTimer(PACKED_FROM_2)).packed_from_rows == 2
    slower = dict(PACKED_FROM_2)
    slower["packed", 2] = 2.5  # packed loses at 2 rows: from 4 on only
    assert calibration.calibrate_matmul(tiny_gpt(), FakeTimer(slower)).packed_from_rows == 4
    plain = {b: v for (p, b), v in PACKED_FROM_2.items() if p == "plain"}
    within_noise = {**{("plain", b): v for b, v in plain.items()},
                    **{("packed", b): 0.99 * v for b, v in plain.items()}}
    assert calibration.calibrate_matmul(tiny_gpt(), FakeTimer(within_noise)).packed_from_rows is None


def test_calibration_is_cached_per_host_and_shapes(tmp_path, monkeypatch):
    cache = tmp_path / "taming-core" / "calibration.json"
    gpt = tiny_gpt()
    timer = FakeTimer(PACKED_FROM_2)
    choice = calibration.choose_matmul(gpt, "auto", cache, timer)
    assert choice.packed_from_rows == 2 and choice.how.startswith("measured") and timer.calls > 0
    stored = json.loads(cache.read_text())
    assert list(stored) == [choice.key] and tc.host_info()["cpu"] in choice.key and "L2 E32" in choice.key
    assert stored[choice.key]["packed_from_rows"] == 2 and stored[choice.key]["step_ms"]["plain"]["1"] == 1000.0
    again = FakeTimer(PACKED_FROM_2)
    found = calibration.choose_matmul(tiny_gpt(), "auto", cache, again)
    assert (found.packed_from_rows, found.how, again.calls) == (2, "cached", 0)
    # another CPU (or torch, or threads, or GPT shape) is measured anew and stored beside the first
    other = {**tc.host_info(), "cpu": "Intel(R) Xeon(R) Platinum 8481C"}
    monkeypatch.setattr(calibration, "host_info", lambda: other)
    plain_wins = FakeTimer({k: v * (2 if k[0] == "packed" else 1) for k, v in PACKED_FROM_2.items()})
    there = calibration.choose_matmul(tiny_gpt(), "auto", cache, plain_wins)
    assert there.packed_from_rows is None and plain_wins.calls > 0 and len(json.loads(cache.read_text())) == 2
    bigger = tc.GPT(tc.GPTConfig(vocab_size=64, block_size=64, n_layer=3, n_head=2, n_embd=32)).eval()
    assert calibration.cache_key(bigger) != there.key


def test_a_corrupt_or_unwritable_cache_is_a_warning_and_a_new_measurement(tmp_path, monkeypatch):
    cache = tmp_path / "calibration.json"
    cache.write_text("{not json")
    timer = FakeTimer(PACKED_FROM_2)
    with pytest.warns(UserWarning, match="calibration cache .* ignored"):
        choice = calibration.choose_matmul(tiny_gpt(), "auto", cache, timer)
    assert choice.packed_from_rows == 2 and timer.calls > 0
    assert json.loads(cache.read_text())[choice.key]["packed_from_rows"] == 2  # rewritten whole
    cache.write_text(json.dumps({choice.key: {"packed_from_rows": "many"}}))
    with pytest.warns(UserWarning, match="unreadable"):
        assert calibration.choose_matmul(tiny_gpt(), "auto", cache, FakeTimer(PACKED_FROM_2)).how != "cached"
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.warns(UserWarning, match="not written"):  # its folder cannot be made: the choice still holds
        assert calibration.choose_matmul(tiny_gpt(), "auto", blocked / "c.json",
                                         FakeTimer(PACKED_FROM_2)).packed_from_rows == 2
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert calibration.cache_path() == tmp_path / "xdg" / "taming-core" / "calibration.json"


def test_forced_paths_sample_the_same_tokens_and_plain_makes_no_packed_copies():
    c = torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(1))
    runs = {}
    for matmul in ("packed", "plain", calibration.MatmulChoice(2, "forced")):
        gpt = tc.prepare_for_sampling(tiny_gpt(), "fp32", matmul=matmul)
        for b in (1, 4):  # one row (plain below PACK_ONE_ROW), four rows (packed where packing)
            runs[str(matmul), b] = tc.sample(gpt, c[:b], 24, top_k=20, generator=torch.Generator().manual_seed(2))
        fc = gpt.blocks[0].mlp[0]
        assert isinstance(fc, PackedLinear) and gpt.sampling_matmul.how == "forced"
        if torch.backends.mkldnn.is_available():
            assert (fc.copy.value is None) == (matmul == "plain")
    for (name, b), z in runs.items():
        assert torch.equal(z, runs["packed", b]), name
    gpt = tc.prepare_for_sampling(tiny_gpt(), "fp32")  # the default: packed, as before
    assert gpt.sampling_matmul.packed_from_rows == 1
    tc.prepare_for_sampling(gpt, "fp32", matmul="plain")  # packed before: the copies go
    assert gpt.blocks[0].mlp[0].copy.value is None and gpt.blocks[0].attn.qkv.copy.value[2] is None
    with pytest.raises(ValueError, match="matmul must be"):
        tc.prepare_for_sampling(tiny_gpt(), "fp32", matmul="fast")


def test_auto_measures_real_steps_of_both_paths(tmp_path):
    gpt = tiny_gpt()
    reference = tc.sample(copy.deepcopy(gpt), torch.zeros(2, 4, dtype=torch.long), 8, greedy=True)
    calibration_cache = tmp_path / "c.json"
    choice = calibration.choose_matmul(gpt, "auto", calibration_cache)
    assert set(choice.step_ms) == {"packed", "plain"}
    assert all(set(v) == {"1", "2", "4"} for v in choice.step_ms.values())
    tc.prepare_for_sampling(gpt, "fp32", matmul=choice)
    assert torch.equal(tc.sample(gpt, torch.zeros(2, 4, dtype=torch.long), 8, greedy=True), reference)
    assert choice.describe().startswith(("plain", "packed")) and calibration_cache.exists()


# ----------------------------------------------------------------------------------------------------------
# threads.py: the thread policy

from taming_core import threads  # noqa: E402

STAT = "cpu  {user} {nice} {system} {idle} 30 0 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1 2\n"
SELF = "4242 (python app.py) R 1 2 3 0 -1 4194304 100 0 0 0 {utime} {stime} 0 0 20 0 9 0 100 0 0\n"


def write_proc(root, user, nice, system, idle, utime, stime=0):
    (root / "self").mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text(STAT.format(user=user, nice=nice, system=system, idle=idle))
    (root / "self" / "stat").write_text(SELF.format(utime=utime, stime=stime))


def test_proc_parsing_counts_a_niced_neighbour_as_busy_and_leaves_out_our_own_time():
    busy, total = threads.cpu_times(STAT.format(user=100, nice=50, system=10, idle=400))
    assert (busy, total) == (100 + 50 + 10 + 5, 100 + 50 + 10 + 5 + 400 + 30)
    assert threads.own_time(SELF.format(utime=70, stime=3)) == 73  # a command name with a space in it
    # 2 cores over 100 jiffies of each (200 in all): 100 busy, 40 of them ours -> others kept 0.6 of a core
    assert threads.others_busy_cores((0, 0, 0), (100, 200, 40), cores=2) == pytest.approx(0.6)
    assert threads.others_busy_cores((5, 9, 1), (5, 9, 1), cores=2) == 0.0  # no time passed
    with pytest.raises(ValueError, match="aggregate"):
        threads.cpu_times("intr 1 2\n")


def test_auto_gives_one_thread_while_another_process_keeps_a_core_busy(tmp_path, monkeypatch):
    proc = tmp_path / "proc"
    policy = threads.ThreadPolicy("auto", best={p: 2 for p in threads.PARTS}, cores=2, proc=str(proc))
    snapshots = iter([(100, 0, 0, 900, 10), (200, 0, 0, 1000, 110),  # quiet: all busy time is ours
                      (200, 0, 0, 1000, 110), (200, 100, 0, 1100, 110)])  # a niced process holds one core
    monkeypatch.setattr(threads.time, "sleep", lambda s: write_proc(proc, *next(snapshots)))
    write_proc(proc, *next(snapshots))
    assert policy.measure() == pytest.approx(0.0) and policy.threads_for("segmenter") == 2
    policy._last = None  # a new window (as after MAX_AGE_S)
    write_proc(proc, *next(snapshots))
    assert policy.measure() == pytest.approx(1.0) and policy.threads_for("segmenter") == 1
    with policy.use("gpt") as n:
        assert n == 1 and torch.get_num_threads() == 1
    policy.best["decode"] = 1  # the measured best caps auto on a quiet machine too
    assert threads.ThreadPolicy("auto", best=policy.best, cores=2).threads_for("decode") == 1


def test_fixed_threads_and_bad_values(tmp_path):
    before = torch.get_num_threads()
    policy = threads.ThreadPolicy("2", cores=2, proc=str(tmp_path / "none"))
    assert policy.measure() == 0.0 and all(policy.threads_for(p) == 2 for p in threads.PARTS)
    with policy.use("decode") as n:
        assert n == torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    assert threads.ThreadPolicy("auto", proc=str(tmp_path / "none")).measure() == 0.0  # no /proc: quiet
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="auto or a whole number"):
            threads.parse_threads(bad)
    with pytest.raises(ValueError, match="part must be"):
        policy.threads_for("vae")


def test_app_flags_match_the_library():
    import app as A

    assert A.MATMULS == tc.MATMULS
    args = A.parse_args(["--matmul", "plain", "--threads", "2"])
    assert (args.matmul, args.threads) == ("plain", "2") and tc.parse_threads(args.threads) == 2
    assert (A.parse_args([]).matmul, A.parse_args([]).threads) == ("auto", "auto")
    for bad in (["--threads", "0"], ["--threads", "many"], ["--matmul", "fast"]):
        with pytest.raises(SystemExit):
            A.parse_args(bad)


def test_the_measured_best_depends_on_the_openmp_wait_policy(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert threads.ThreadPolicy("auto", cores=2).best == threads.BEST
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    policy = threads.ThreadPolicy("auto", cores=2)
    assert policy.best == threads.BEST_PASSIVE and policy.threads_for("decode") == 2
    assert policy.threads_for("segmenter") == 1 and "decode up to 2" in policy.describe()


def test_prepare_for_sampling_auto_measures_once_per_host_then_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = tc.prepare_for_sampling(tiny_gpt(), "fp32", matmul="auto").sampling_matmul
    assert first.how.startswith("measured") and (tmp_path / "taming-core" / "calibration.json").exists()
    again = tc.prepare_for_sampling(tiny_gpt(1), "fp32", matmul="auto").sampling_matmul  # same shapes
    assert again.how == "cached" and again.packed_from_rows == first.packed_from_rows
    low = tc.prepare_for_sampling(tiny_gpt(), "int8", matmul="auto")  # low-bit weights: their own kernels
    assert isinstance(low.head, tc.LowBitLinear) and not hasattr(low, "sampling_matmul")
