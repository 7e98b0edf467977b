"""Which integration test files run side by side on the one local cluster, and why.

tests/run-integration.sh runs the two groups at the same time, each as a pytest process of its own with its
files in order (a file's name decides its place). What one group does must not disturb the other:
- the dev inventory and the CloudNativePG stand-in share the cluster-wide CNPG CRDs and the Barman Cloud
  plugin's Service in cnpg-system (the stand-in test deletes the CRDs at its end): one group, dev first;
- the stand-in Langfuse server answers each health call for the pod it names (X-Langfuse-Ops-Pod), so web
  versions and the "event propagation stuck" label of one namespace do not leak into another;
- every file has uuid-named namespaces and databases; each group keeps its backups in a bucket of its own
  (conftest.BACKUP_BUCKET), since an install rewrites the bucket's whole lifecycle configuration.
The split balances the groups' time (of CI's tier), since the slower one is the stage's: "upgrades"
holds the upgrades and the tests that make no release, "installs" the installs (the official ClickHouse
operator's too), the backup Jobs and the restores. A test file missing here fails the collection, so none is left out.

"services" holds the files that need the local data services but no cluster (the backup scripts, the S3
point-in-time module): they belong to the fast tier, and tests/run-unit.sh runs them beside the unit tests (whose
longest file keeps one core busy while the other is idle), not in the integration stage.

`python tests/integration/groups.py` prints the names of the groups that need the cluster; `--no-cluster` the others.
"""

NO_CLUSTER = {"services"}

GROUPS = {
    "test_upgrade.py": "upgrades",
    "test_upgrade_v4.py": "upgrades",
    "test_v4_phases.py": "upgrades",
    "test_backup_scripts.py": "services",
    "test_install_migration_gate.py": "upgrades",
    "test_install_refuses_bad_inputs.py": "upgrades",
    "test_localenv.py": "upgrades",
    "test_maintenance_window.py": "upgrades",
    "test_migration_status.py": "upgrades",
    "test_s3_point_in_time.py": "services",
    "test_standin_altinity.py": "upgrades",
    "test_app_secret_loss.py": "installs",
    "test_backup_jobs.py": "installs",
    "test_clickhouse_official.py": "installs",
    "test_argo_rollouts.py": "installs",
    "test_install.py": "installs",
    "test_install_dev_inventory.py": "installs",
    "test_install_valkey.py": "installs",
    "test_job_runner.py": "installs",
    "test_observability.py": "installs",
    "test_restore.py": "installs",
    "test_standin_cnpg.py": "installs",
    "test_standin_gateway.py": "installs",
    "test_gateway_manifests.py": "installs",
}

# The tests CI leaves out (`--tier ci`, what `make test` runs), each with why it may: what it covers, CI covers
# elsewhere or it exercises an optional mode. `make test-full` (or `make integration-full`) runs them; run it
# before a release and after a change to what they cover. "file::test name prefix" or "file" (all of it): reason.
FULL_TIER_ONLY = {
    # Optional modes whose whole file is kept for the full tier: CI's molecule scenario converges and verifies
    # observability (and tests/unit/test_observability_render.py renders every case of it); the Argo web's
    # official-chart path is the upstream check's Argo line.
    "test_argo_rollouts.py": "the optional Argo Rollouts web (langfuse_helm_web_workload: argo_rollout)",
    "test_observability.py": "the optional observability role (molecule converges and verifies it in CI)",
    # Idempotence, per optional mode: CI converges the local inventory twice (test_install.py, molecule) and every
    # maintenance-window test re-runs to changed=0.
    "test_install_dev_inventory.py::test_second_converge_changes_nothing": "idempotence of the dev inventory",
    "test_install_valkey.py::test_second_converge_changes_nothing": "idempotence of in-cluster Valkey",
    # In-cluster Valkey on an install of its own: CI installs Valkey through the dev inventory
    # (test_install_dev_inventory.py::test_redis_is_valkey) and keeps the eviction-policy refusal.
    "test_install_valkey.py::test_valkey_runs_persistent": "Valkey's StatefulSet on an install of its own",
    "test_install_valkey.py::test_langfuse_points_at_the_valkey": "Langfuse's Redis host on that install",
    "test_install_valkey.py::test_the_config_starts_a_real_server": "that install's config on a real server",
    "test_clickhouse_official.py::test_second_run_changes_nothing": "idempotence of the official operator mode",
    # Failure paths of optional modes, each a run that waits out a timeout.
    "test_install_dev_inventory.py::test_a_cluster_the_operator_cannot_build": "a CloudNativePG Cluster that never builds",
    "test_install_dev_inventory.py::test_an_aborted_clickhouse_change": "an Altinity change the operator aborts",
    "test_clickhouse_official.py::test_a_keeper_that_never_gets_ready": "an official-operator Keeper that never gets ready",
    "test_clickhouse_official.py::test_a_spec_the_operator_refuses": "a spec the official operator refuses",
    # A whole install that waits out its route: CI installs every release through the Gateway (inventories/local);
    # tests/unit/test_traffic.py judges each route status the wait can meet.
    "test_install.py::test_a_route_no_gateway_serves": "an install whose route no Gateway serves",
    # Variants whose core case CI runs: the same migration gate stops upgrade.yml in test_upgrade.py; the
    # confirmed regeneration itself runs; the lock's judgement of a stale lease is unit-tested
    # (tests/unit/test_namespace_lock.py) and CI takes stale locks over in the maintenance-window tests.
    "test_install_migration_gate.py::test_a_dirty_clickhouse_version_stops_the_install": "the gate on install (CI runs it on upgrade)",
    "test_app_secret_loss.py::test_confirmed_regeneration_in_check_mode": "the regeneration in check mode (CI runs it for real)",
    "test_maintenance_window.py::test_a_stale_lock_is_not_taken_over_by_a_check_mode_run": "check mode beside a stale lock",
    # The direct v3 -> v4 jump: CI walks the supported path, upstream's phases (test_v4_phases.py); v3 keys on
    # chart 2 are refused by the filter tests/unit/test_chart_values.py checks.
    "test_upgrade_v4.py::test_the_major_jump_moves_the_chart_then": "the direct jump's order (test_v4_phases.py walks the phases)",
    "test_upgrade_v4.py::test_v3_keys_in_the_overrides_are_refused": "v3 keys refused on chart 2, on a v3 install of its own",
    # A v4 minor upgrade: CI's main line is v4, and test_upgrade.py runs one (4.4.0 -> 4.12.0, chart 2.0.0's
    # empty-Secret path included) with the canary and its gates.
    "test_upgrade_v4.py::test_a_v4_install_upgrades_and_stays_idempotent": "a v4 minor upgrade (test_upgrade.py runs one)",
}

if __name__ == "__main__":
    import sys
    names = sorted(set(GROUPS.values()))
    print(" ".join(n for n in names if (n in NO_CLUSTER) == ("--no-cluster" in sys.argv[1:])))
