"""Which integration test files run side by side on the one local cluster, and why.

tests/run-integration.sh runs the two groups at the same time, each as a pytest process of its own with its
files in order (a file's name decides its place). What one group does must not disturb the other:
- the dev inventory and the CloudNativePG stand-in share the cluster-wide CNPG CRDs and the Barman Cloud
  plugin's Service in cnpg-system (the stand-in test deletes the CRDs at its end): one group, dev first;
- the stand-in Langfuse server answers each health call for the pod it names (X-Langfuse-Ops-Pod), so web
  versions and the "event propagation stuck" label of one namespace do not leak into another;
- every file has uuid-named namespaces and databases; each group keeps its backups in a bucket of its own
  (conftest.BACKUP_BUCKET), since an install rewrites the bucket's whole lifecycle configuration.
The split balances the groups' time, since the slower one is the stage's: "upgrades" holds
the upgrades, the tests that make no release and the official ClickHouse operator's install, "installs" the
other installs and the restores. A test file missing here fails the collection, so none is left out.

`python tests/integration/groups.py` prints the group names.
"""

GROUPS = {
    "test_upgrade.py": "upgrades",
    "test_upgrade_v4.py": "upgrades",
    "test_v4_phases.py": "upgrades",
    "test_backup_scripts.py": "upgrades",
    "test_backup_jobs.py": "upgrades",
    "test_clickhouse_official.py": "upgrades",
    "test_install_migration_gate.py": "upgrades",
    "test_install_refuses_bad_inputs.py": "upgrades",
    "test_localenv.py": "upgrades",
    "test_maintenance_window.py": "upgrades",
    "test_migration_status.py": "upgrades",
    "test_s3_point_in_time.py": "upgrades",
    "test_standin_altinity.py": "upgrades",
    "test_app_secret_loss.py": "installs",
    "test_argo_rollouts.py": "installs",
    "test_install.py": "installs",
    "test_install_dev_inventory.py": "installs",
    "test_install_valkey.py": "installs",
    "test_job_runner.py": "installs",
    "test_observability.py": "installs",
    "test_restore.py": "installs",
    "test_standin_cnpg.py": "installs",
}

# The tests CI leaves out (`--tier ci`, what `make test` runs), each with why it may: what it covers, CI covers
# elsewhere or it exercises an optional mode. `make test-full` (or `make integration-full`) runs them; run it
# before a release and after a change to what they cover. "file::test name prefix": reason.
FULL_TIER_ONLY = {
    # Idempotence, per optional mode: CI converges the local inventory twice (test_install.py, molecule) and every
    # maintenance-window test re-runs to changed=0.
    "test_argo_rollouts.py::test_install_again_changes_nothing": "idempotence of the Argo web",
    "test_install_dev_inventory.py::test_second_converge_changes_nothing": "idempotence of the dev inventory",
    "test_install_valkey.py::test_second_converge_changes_nothing": "idempotence of in-cluster Valkey",
    "test_clickhouse_official.py::test_second_run_changes_nothing": "idempotence of the official operator mode",
    "test_observability.py::test_second_run_changes_nothing_and_prints_no_secret": "idempotence of observability",
    # Failure paths of optional modes, each a run that waits out a timeout: CI keeps the same paths for the
    # default Deployment web (test_upgrade.py) and the restore (test_restore.py).
    "test_argo_rollouts.py::test_a_never_ready_canary_is_aborted": "Argo's canary abort (test_upgrade.py has the Deployment's)",
    "test_argo_rollouts.py::test_restore_stops_the_rollouts_web_pods": "restore with an Argo web (test_restore.py has the Deployment's)",
    "test_argo_rollouts.py::test_back_to_a_deployment_web": "the switch from an Argo web back to a Deployment",
    "test_install_dev_inventory.py::test_a_cluster_the_operator_cannot_build": "a CloudNativePG Cluster that never builds",
    "test_install_dev_inventory.py::test_an_aborted_clickhouse_change": "an Altinity change the operator aborts",
    "test_clickhouse_official.py::test_a_keeper_that_never_gets_ready": "an official-operator Keeper that never gets ready",
    "test_clickhouse_official.py::test_a_spec_the_operator_refuses": "a spec the official operator refuses",
    "test_observability.py::test_check_diff_shows_a_rule_change": "check mode of observability (test_install.py has the install's)",
    "test_observability.py::test_external_clickhouse_endpoint": "an external ClickHouse endpoint added and dropped",
    # The direct v3 -> v4 jump's step order: CI walks the supported path, upstream's phases (test_v4_phases.py).
    "test_upgrade_v4.py::test_the_major_jump_moves_the_chart_then": "the direct jump's order (test_v4_phases.py walks the phases)",
}

if __name__ == "__main__":
    print(" ".join(sorted(set(GROUPS.values()))))
