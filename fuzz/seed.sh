#!/usr/bin/env bash
# Builds the seed corpora of the fuzz targets into fuzz/corpus/<target>/ from what this project writes itself
# (a synthetic world, its shards, a checkpoint, the configs) and hand-written edge cases. Run from the repository
# root with a built chexlab: `bash fuzz/seed.sh [path/to/chexlab]`. Campaigns may add ../shared/reference as an
# extra, read-only seed directory; its files are not copied here.
set -euo pipefail
bin=${1:-target/debug/chexlab}
c=fuzz/corpus
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" -q synth --out "$work/w" --studies 12 --image-size 16 --seed 3 >/dev/null
"$bin" -q shard --dataset "$work/w" --labels "truth=$work/w/truth/image_labels.csv" --image-size 16 \
    --target-mb 0.004 --out "$work/s" >/dev/null
printf 'seed = 1\nrun_dir = "%s/run"\n[dataset]\nkind = "synthetic"\nroot = "%s/w"\nimage_size = 16\n[[sources]]\nname = "truth"\nkind = "truth"\n[model]\narch = "small"\ngrowth_rate = 2\nblock_config = [1]\ninit_features = 4\nimage_size = 16\nobservations = ["Pleural Effusion"]\n[schedule]\nmax_steps = 1\nbatch_size = 4\ncheckpoint_every = 1\n' \
    "$work" "$work" > "$work/c.toml"
mkdir -p "$work/run"
cp -r "$work/s" "$work/run/shards"
"$bin" -q train --config "$work/c.toml" >/dev/null

put() { mkdir -p "$c/$1"; cat > "$c/$1/$2"; }
# Labeler input: headerless id,report or report-only rows, a header row, quotes, CRLF.
head -c 1500 "$work/w/reports.csv" | put labeler_input synth
printf 'Reports\n"No effusion, no edema."\nMild cardiomegaly.\n' | put labeler_input header
printf '1,"Line one.\r\nLine two, ""quoted"".\r\n"\r\n2,Clear.\r\n' | put labeler_input crlf
printf '1,"never closed\n2,ok\n' | put labeler_input open_quote
# Section extraction and the rule labeler: synthetic reports and hand-written constructions.
n=0
for f in $(find "$work/w/files" -name '*.txt' | sort | head -4); do
    n=$((n+1)); put sections "synth$n" < "$f"; put rule_labeler "synth$n" < "$f"; put tokenizer "synth$n" < "$f"
done
printf 'FINDINGS: Heart size is normal.\n\nIMPRESSION:\n1. No pneumothorax.\n2. Possible left basilar atelectasis versus pneumonia.\n' \
    | tee >(put rule_labeler sections) | put sections numbered
printf 'No evidence of pleural effusion or pneumothorax. Cannot exclude early pneumonia. The heart is at the upper limits of normal.' \
    | tee >(put rule_labeler_scaling hedges) >(put tokenizer hedges) | put rule_labeler hedges
printf 'no no no no effusion effusion not ruled out ' | put rule_labeler_scaling repeats
printf 'pneumothorax' | put rule_labeler_scaling word
# Tables: the first byte picks the file name (see harness::tables).
{ printf '\x02'; head -c 1200 "$work/w/mimic-cxr-2.0.0-metadata.csv"; } | put tables metadata
{ printf '\x03'; head -c 800 "$work/w/mimic-cxr-2.0.0-split.csv"; } | put tables split
{ printf '\x05'; head -c 1200 "$work/w/truth/report_labels.csv"; } | put tables labeled
{ printf '\x01'; printf 'Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices\nCheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0\n'; } | put tables chexpert
{ printf '\x06'; printf 'id,Atelectasis,Cardiomegaly,Effusion,Infiltration,Mass,Nodule,Pneumonia,Pneumothorax,Consolidation,Edema,Emphysema,Fibrosis,Pleural_Thickening,Hernia\n1,0,1,0,0,0,0,0,0,0,0,0,0,0,0\n'; } | put tables gold
# Configs, each with and without overrides after a NUL byte.
for f in configs/*.toml; do
    b=$(basename "$f" .toml)
    put config "$b" < "$f"
    { cat "$f"; printf '\0schedule.epochs=2\nsources.0.name=x\n'; } | put config "$b-set"
done
# A shard and a checkpoint, as written.
mkdir -p "$c/shard_reader" "$c/checkpoint"
cp "$(ls "$work"/s/train-*.parquet | head -1)" "$c/shard_reader/shard.parquet"
cp "$(ls "$work"/run/train/truth/checkpoints/*.ckpt | head -1)" "$c/checkpoint/step.ckpt"
du -sh "$c"/* | sed 's/^/  /'
