#!/usr/bin/env bash
# `dvc exp run "$@"` in the workspace, as `make paper` runs it, except that a run which fails before DVC records any
# stage in dvc.lock (the check stage listing what is missing, a refused -S value) leaves the workspace as it was.
# DVC writes the -S values into params.yaml before the first stage and keeps them when the run fails: `make demo` would
# then run the paper's setting. Once a stage is recorded, params.yaml keeps the run's setting, so running the same
# command again resumes where it stopped. Run from the repository root.
set -u

saved=$(mktemp -d)
trap 'rm -rf "$saved"' EXIT
cp -p params.yaml "$saved/params.yaml"
index=$(git ls-files --stage -- params.yaml)  # "<mode> <blob> <stage>\tparams.yaml": DVC may stage its edit
lock=absent
if [ -e dvc.lock ]; then cp -p dvc.lock "$saved/dvc.lock"; lock=present; fi

dvc exp run "$@" && exit 0
status=$?

if { [ $lock = absent ] && [ ! -e dvc.lock ]; } || { [ $lock = present ] && cmp -s dvc.lock "$saved/dvc.lock"; }; then
    cp -p "$saved/params.yaml" params.yaml
    if [ -n "$index" ] && [ "$(git ls-files --stage -- params.yaml)" != "$index" ]; then
        read -r mode blob _ <<<"$index"
        git update-index --cacheinfo "$mode,$blob,params.yaml"
    fi
    echo "The run failed before any stage ran (dvc.lock unchanged): params.yaml is back as it was, the workspace" \
        "unchanged. Fix what the error above names and run the same command again." >&2
else
    echo "The run failed after stages ran (recorded in dvc.lock): params.yaml keeps the run's setting so that" \
        "running the same command again resumes where it stopped." >&2
fi
exit $status
