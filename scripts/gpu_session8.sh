#!/bin/bash
# Session 8's device call: two fine-tunings of the shipped stage-9 weights trained side by side
# on the one GPU, on session 7's widened synthetic family plus body outlines (air outside, a
# subcutaneous fat shell, skin: `body_fraction`, new this session) against the measured failure
# of labelling a soft-tissue body inside fat/air as vessel. Run A puts 30 % of the cases in a
# body, run B 50 % (other seeds). Model files and logs land in $OUT (at most 8 files).
# The default model (stage 10) is run B's final weights, radius-calibrated
# (scripts/calibrate_radius.py --large-cases 6), T_p/T_r tuned by
# scripts/evaluate_default.py --val-cases 10 (docs/training.md, session 8).
# CPU smoke test:  MIN=2 DEVICE=cpu EXTRA="--settings cpu --batch-size 1" OUT=/tmp/o bash $0
MIN=${MIN:-8.4}
. "$(dirname "$0")/device_env.sh"
FAMILY='"sharp_fraction": 0.2, "large_fraction": 0.25, "large_max_radius_mm": [5.0, 12.0], "extent_mm": [40.0, 104.0], "hard_fraction": 0.15, "wide_psf_fraction": 0.1, "segment_fraction": 0.25, "generator": {"distractor_scale": 2.0}'
COMMON=(--device "$DEVICE" --no-eval --only ddt --cldice-weight 0.3 --cldice-warmup 0
        --val-tubes --val-cases 4 --val-every 1000 --minutes "$MIN"
        --init ddt=napari_tubular/weights/default.pt --lr 5e-4 --thin-fraction 0.4
        --workers 4 --processes 7 $EXTRA)
run() {  # name, body fraction, seed
    $PY scripts/train_default.py "${COMMON[@]}" --seed "$3" \
        --synthetic "{$FAMILY, \"body_fraction\": $2}" \
        --out "/tmp/s8$1" --work "/tmp/s8w$1" >"/tmp/s8$1.log" 2>&1
}
run A 0.3 8 &
run B 0.5 9 &
wait
for R in A B; do
    W=/tmp/s8w$R/ddt
    tail -3 "/tmp/s8$R.log"
    [ -f $W/model.pt ] && cp $W/model.pt "$OUT/${R}_final.pt"
    [ -f $W/best.pt ] && cp $W/best.pt "$OUT/${R}_best.pt"
done
tar czf "$OUT/logs.tar.gz" /tmp/s8A.log /tmp/s8B.log /tmp/s8wA/ddt.log /tmp/s8wB/ddt.log \
    /tmp/s8wA/ddt/log.json /tmp/s8wB/ddt/log.json /tmp/s8wA/ddt.json /tmp/s8wB/ddt.json 2>/dev/null
ls -la "$OUT"
