"""Rank and master from the launcher's environment (no process group is started here)."""

import pytest

from webfg.distributed import detect, expand_hostlist
from webfg.io import InputError


@pytest.mark.parametrize(
    "hostlist, hosts",
    [
        ("gpu5", ["gpu5"]),
        ("node[01-03,7],gpu5", ["node01", "node02", "node03", "node7", "gpu5"]),
        ("a[8-10]", ["a8", "a9", "a10"]),
        ("r[1-2]-n[09-10]", ["r1-n09", "r1-n10", "r2-n09", "r2-n10"]),
        ("node[001],login-2.cluster", ["node001", "login-2.cluster"]),
    ],
)
def test_slurm_host_lists_expand_in_order(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


def test_a_host_list_slurm_never_writes_names_it():
    with pytest.raises(InputError, match=r"Slurm host list 'n\[a-b\]': cannot read the range 'a-b'"):
        expand_hostlist("n[a-b]")


def test_srun_ranks_share_the_first_host_and_a_port_from_the_job_id():
    step = {"SLURM_JOB_ID": "4711", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[07-08]"}
    ranks = [detect({**step, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r % 2)}) for r in range(4)]
    assert [(e.rank, e.local_rank, e.world_size, e.launcher) for e in ranks] == [
        (0, 0, 4, "srun"),
        (1, 1, 4, "srun"),
        (2, 0, 4, "srun"),
        (3, 1, 4, "srun"),
    ]
    assert {(e.master_addr, e.master_port) for e in ranks} == {("gpu07", ranks[0].master_port)}
    assert 20000 <= ranks[0].master_port <= 60000
    assert detect({**step, "SLURM_PROCID": "0", "MASTER_PORT": "29999"}).master_port == 29999
    assert detect({"SLURM_JOB_ID": "4711", "SLURM_PROCID": "0"}).world_size == 1  # a batch script, not a step
