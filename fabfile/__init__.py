"""Day-to-day operation of a deployed cluster: `fab -l` lists the tasks, `fab --help
TASK` tells one. Hosts come from the Ansible inventory (fabfile.inventory)."""

from invoke import Collection

from fabfile import backups, fleet, upgrade, workers

ns = Collection(fleet.status, fleet.collect_logs, workers.drain, workers.resume,
                workers.rotate_tokens, upgrade.rolling_upgrade, backups.backup,
                backups.restore)
