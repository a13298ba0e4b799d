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
