#!/usr/bin/env bash
# Install Slurm and MUNGE from Debian when they are missing, for the single-node Slurm tests
# (tests/test_slurm_train.py). Called by .ci/run; needs root and apt. Does nothing when the
# binaries are already there. The packages' own services are not started: the test fixture
# starts its own daemons with its own configuration and state folder.
set -euo pipefail

needed=(sbatch squeue scontrol slurmctld slurmd munged)
missing=0
for tool in "${needed[@]}"; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || missing=1
done
if [[ $missing == 0 ]]; then
    echo "install_slurm.sh: Slurm and MUNGE already installed"
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "install_slurm.sh: Slurm/MUNGE missing and not root; the Slurm tests will be skipped" >&2
    exit 0
fi

# policy-rc.d exit status 101 tells the packages' maintainer scripts not to start services
# (there is usually no init system in a container anyway). Restore whatever was there before.
policy=/usr/sbin/policy-rc.d
backup=""
if [[ -e $policy ]]; then
    backup=$(mktemp)
    cp -p "$policy" "$backup"
fi
restore_policy() {
    if [[ -n $backup ]]; then mv -f "$backup" "$policy"; else rm -f "$policy"; fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' >"$policy"
chmod 755 "$policy"

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# slurm-wlm pulls in slurmctld, slurmd and the client commands; munge authenticates them.
apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
echo "install_slurm.sh: installed slurm-wlm $(dpkg-query -W -f "\${Version}" slurm-wlm)"
