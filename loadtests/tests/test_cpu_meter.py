"""The storm's CPU meter: every group, the hypervisor's steal and the rest add up."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from loadtests.cpu import CpuMeter, cores_between, machine_busy_seconds, run_queue_waits


def test_a_sample_splits_the_machine_into_groups_steal_and_the_rest() -> None:
    sample = CpuMeter({}, []).sample()

    assert set(sample) == {"stores", "generator", "steal", "other"}
    assert 0 <= sample["steal"] <= psutil.cpu_times().steal
    assert sample["generator"] > 0  # this process
    assert abs(sum(sample.values()) - machine_busy_seconds()) < 1.0


def test_cores_between_two_samples_keep_milli_core_resolution() -> None:
    assert cores_between({"steal": 1.0}, {"steal": 1.09, "other": 4.5}, 9.0) == {
        "steal": 0.01,
        "other": 0.5,
    }
    assert cores_between({"steal": 1.0}, {"steal": 1.1}, 9.0) == {"steal": 0.011}
    assert cores_between({}, {"steal": 1.0}, 0.0) == {}


def test_run_queue_waits_read_each_group_and_skip_processes_that_are_gone() -> None:
    own = Path(f"/proc/{os.getpid()}/schedstat").read_text().split()
    waits = run_queue_waits({"me": [os.getpid()], "gone": [2**22 + 1], "none": []})

    assert waits["me"] >= int(own[1]) / 1e9
    assert waits["gone"] == waits["none"] == 0.0
