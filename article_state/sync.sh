#!/usr/bin/env bash
# Keep the state of an article build that outlives one machine (see README.md in this folder).
#   article_state/sync.sh save NAME      WORK/NAME -> article_state/NAME (runs' newest checkpoints, kept evaluations)
#   article_state/sync.sh restore NAME   article_state/NAME -> WORK/NAME (never over a file that is there)
# WORK is /work/exp/art unless ARTICLE_WORK says otherwise: kept evaluations name their runs and data by
# absolute path, so a build resumes only at the path it started at.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${ARTICLE_WORK:-/work/exp/art}
cmd=${1:?usage: sync.sh save|restore NAME}
name=${2:?usage: sync.sh save|restore NAME}
src=$work/$name
dst=$here/$name
case $cmd in
  save)
    test -d "$src" || { echo "sync.sh: error: $src: no such build" >&2; exit 2; }
    mkdir -p "$dst"
    cd "$src"
    files=()
    [ -f experiment.yaml ] && files+=(experiment.yaml)
    for run in runs/*/seed_*; do
      [ -d "$run" ] || continue
      for f in config.yaml shapes.json metrics.jsonl latent_codes.safetensors .deepsdf-ad; do
        [ -f "$run/$f" ] && files+=("$run/$f")
      done
      newest=$(ls "$run"/checkpoints/epoch_*.json 2>/dev/null | sort | tail -1 || true)
      if [ -n "$newest" ]; then files+=("$newest" "${newest%.json}.safetensors"); fi
    done
    while IFS= read -r f; do files+=("$f"); done < <(find report -path 'report/evaluations/*' -type f \
      \( -name '*.json' -o -name '*.safetensors' \) 2>/dev/null | sort)
    [ -f report/results.json ] && files+=(report/results.json)
    rm -rf "$dst.new" && mkdir -p "$dst.new"
    tar cf - "${files[@]}" | tar xf - -C "$dst.new"
    [ -f "$dst/BUILD" ] && cp "$dst/BUILD" "$dst.new/BUILD"
    rm -rf "$dst" && mv "$dst.new" "$dst"
    echo "saved ${#files[@]} files of $src into $dst ($(du -sh "$dst" | cut -f1))"
    ;;
  restore)
    test -d "$dst" || { echo "sync.sh: error: $dst: nothing kept for $name" >&2; exit 2; }
    mkdir -p "$src"
    cp -a -n "$dst"/. "$src"/
    rm -f "$src/BUILD"
    echo "restored $dst into $src"
    ;;
  *) echo "sync.sh: error: $cmd: save or restore" >&2; exit 2 ;;
esac
