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

if __name__ == "__main__":
    print(" ".join(sorted(set(GROUPS.values()))))
