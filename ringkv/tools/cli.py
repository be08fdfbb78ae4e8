"""The `ringkv` command line: run nodes, run a local cluster, and talk to a cluster.

Job: the user-facing edge of contract section 1.

    ringkv serve --node-id ID [...]           one node (blocks until SIGTERM/SIGINT)
    ringkv dev-cluster [--nodes K ...]        K local nodes as processes, until Ctrl-C
    ringkv put KEY [VALUE | -]                write (value from stdin when "-" or absent)
    ringkv get KEY                            read (siblings shown one after another)
    ringkv delete KEY                         delete what is currently visible
    ringkv incr KEY [N] | counter KEY         counters (applied at most once per key)
    ringkv sadd | srem | smembers KEY ...     sets (add wins)
    ringkv keys [--bucket B] | mget KEY...    listing and multi-get
    ringkv bucket props B | set B --r 1 ...   bucket properties
    ringkv cluster status | leave | remove | lookup    membership and ring
    ringkv sim --seed S | --seeds A:B         the deterministic simulation (sim/)
    ringkv experiment staleness | predict | plot       consistency experiments (PBS)

This module only assembles the group; each family of commands lives with its noun:
`ringkv.tools.node_commands` (serve, dev-cluster), `ringkv.tools.kv_commands`
(put, get, delete), `ringkv.tools.type_commands` (incr, counter, sadd, srem,
smembers), `ringkv.tools.bucket_commands` (keys, mget, bucket ...),
`ringkv.tools.cluster_commands` (cluster ...), `sim.cli` (sim) and
`ringkv.tools.experiment` (experiment). Every client command takes `--node` as one
URL or a comma-separated list of nodes to fail over between.

Client commands exit 0 on success, 1 when a key is not found, 2 on usage errors,
3 when a quorum was not reached (503), 4 on any other HTTP or connection error
(`ringkv.tools.exits`). `serve` exits 2 on bad configuration, with one line naming the
bad setting, before anything else (the node runtime is imported only once the
configuration is valid).
"""

from __future__ import annotations

import click

from ringkv import __version__
from ringkv.tools.backup_commands import backup, restore
from ringkv.tools.bucket_commands import bucket, keys, mget
from ringkv.tools.certs import certs
from ringkv.tools.cluster_commands import cluster
from ringkv.tools.experiment import experiment
from ringkv.tools.kv_commands import delete, get, put
from ringkv.tools.node_commands import dev_cluster, serve
from ringkv.tools.type_commands import counter, incr, sadd, smembers, srem
from sim.cli import sim_command

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ringkv")
def main() -> None:
    """ringkv: a Dynamo-style, eventually consistent, sharded key-value store."""


for _command in (
    serve, dev_cluster, put, get, delete, incr, counter, sadd, srem, smembers, keys, mget,
    bucket, cluster, sim_command, experiment, backup, restore, certs,
):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="ringkv")
