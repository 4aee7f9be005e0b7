"""Zero-shot video-text retrieval with InternVL-C/G: upstream's ``video_retrieval/test_msrvtt.py`` (MSR-VTT 1k-A).

    python video_retrieval/test_msrvtt.py --video-root data/msrvtt/videos/all \\
        --metadata data/msrvtt/msrvtt_test1k.json --mode InternVL-C --num-frames 8 \\
        --pretrained pretrained/InternVL-14B-224px
    python -m video_retrieval.test_msrvtt ...                                   # the same

See video_retrieval/README.md. Frames are read by :mod:`internvl.data.video`; this app imports only the
library.
"""
