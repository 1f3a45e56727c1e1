#!/bin/bash
# Submit bids_encoder on a SLURM cluster: one participant per array task, then the group level once every
# participant task has succeeded (afterok on the whole array).
#
#   singularity/submit.sh BIDS_DIR OUTPUT_DIR [participant options ...] [-- group options ...]
#
#   e.g. SIF=$HOME/images/bids_encoder-0.1.0.sif singularity/submit.sh /data/ds /data/ds/derivatives/bids_encoder \
#            --task prf --model prf2d --hrf fit -- --min-rsquared 0.1
#
# Environment (all optional):
#   SIF            the Apptainer image (default: ./bids_encoder-0.1.0.sif)
#   FMRIPREP_DIR   fMRIPrep derivatives outside BIDS_DIR/derivatives/fmriprep (bound read-only, passed as --derivatives)
#   PARTICIPANTS   labels to run, e.g. "01 02 05" (default: participants.tsv, else the sub-* folders of BIDS_DIR)
#   MAX_PARALLEL   at most this many array tasks at once (default 20)
#   LOG_DIR        SLURM logs and the participant list (default: ./slurm_logs)
#   PARTICIPANT_SBATCH, GROUP_SBATCH   extra sbatch options, e.g. "--partition=gpu --account=lab"
# Resources (GPU, CPUs, memory, time) are the #SBATCH lines of participant.sbatch and group.sbatch.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage="usage: $(basename "$0") BIDS_DIR OUTPUT_DIR [participant options ...] [-- group options ...]"
if [ $# -lt 2 ]; then
    echo "$usage" >&2
    exit 64
fi
bids_dir=$(realpath "$1")
output_dir=$(realpath -m "$2")
shift 2
participant_args=()
group_args=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then
        shift
        group_args=("$@")
        break
    fi
    participant_args+=("$1")
    shift
done

sif=$(realpath -m "${SIF:-bids_encoder-0.1.0.sif}")
log_dir=$(realpath -m "${LOG_DIR:-slurm_logs}")
if [ ! -f "$bids_dir/dataset_description.json" ]; then
    echo "error: $bids_dir is not a BIDS dataset (no dataset_description.json)" >&2
    exit 16
fi
if [ ! -f "$sif" ]; then
    echo "error: no Apptainer image at $sif (build it: apptainer build $sif singularity/bids_encoder.def; or set SIF)" >&2
    exit 66
fi
fmriprep_dir=""
if [ -n "${FMRIPREP_DIR:-}" ]; then
    fmriprep_dir=$(realpath "$FMRIPREP_DIR")
fi
mkdir -p "$log_dir" "$output_dir"

list="$log_dir/participants_$(date +%Y%m%d_%H%M%S)_$$.txt"
if [ -n "${PARTICIPANTS:-}" ]; then
    read -r -a labels <<< "$PARTICIPANTS"
    printf '%s\n' "${labels[@]}"
elif [ -f "$bids_dir/participants.tsv" ]; then
    tail -n +2 "$bids_dir/participants.tsv" | cut -f1
else
    find "$bids_dir" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' -printf '%f\n'
fi | sed -e 's/^sub-//' -e '/^[[:space:]]*$/d' | sort -u > "$list"
count=$(wc -l < "$list")
if [ "$count" -eq 0 ]; then
    echo "error: no participants found in $bids_dir" >&2
    exit 18
fi

common="ALL,BIDS_DIR=$bids_dir,OUTPUT_DIR=$output_dir,SIF=$sif,FMRIPREP_DIR=$fmriprep_dir"
read -r -a participant_sbatch <<< "${PARTICIPANT_SBATCH:-}"
read -r -a group_sbatch <<< "${GROUP_SBATCH:-}"
array_id=$(sbatch --parsable --array="1-${count}%${MAX_PARALLEL:-20}" \
    --output="$log_dir/participant_%A_%a.out" --export="$common,PARTICIPANTS_FILE=$list" \
    "${participant_sbatch[@]}" "$here/participant.sbatch" "${participant_args[@]}")
array_id=${array_id%%;*}
group_id=$(sbatch --parsable --dependency="afterok:$array_id" --kill-on-invalid-dep=yes \
    --output="$log_dir/group_%j.out" --export="$common" \
    "${group_sbatch[@]}" "$here/group.sbatch" "${group_args[@]}")
group_id=${group_id%%;*}
echo "participant level: array job $array_id, $count task(s) (participants in $list)"
echo "group level: job $group_id, starts when every participant task has succeeded"
echo "logs: $log_dir"
