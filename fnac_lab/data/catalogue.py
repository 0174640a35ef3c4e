"""The benchmarks the workbench knows by name: training subsets and annotated test sets (Sun et al., CVPR 2023;
EZ-VSL, Mo and Morgado, ECCV 2022). A plain table, read by the configuration, the command line and the readers."""

from __future__ import annotations

#: Training sets: name -> default id-list file (looked up as ``ROOT/<file>`` unless ``train_ids`` is given);
#: ``None`` means every clip of the layout.
TRAINSETS: dict[str, str | None] = {
    "flickr_10k": "flickr_10k.txt",  # Flickr-SoundNet, 10k clips
    "flickr_144k": "flickr_144k.txt",  # Flickr-SoundNet, 144k clips
    "vggss_10k": "vggss_10k.txt",  # VGG-Sound, 10k clips
    "vggss_144k": "vggss_144k.txt",  # VGG-Sound, 144k clips
    "vggss_heard": "vggss_heard.txt",  # VGG-Sound clips of the 110 heard classes (open-set training)
    "vggsound_full": None,  # every VGG-Sound clip present in the layout
    "stamps": "train.csv",  # the stamps benchmark's training clips (Tux Paint's photographs and recordings)
}
#: Test sets and the kind of ground truth they carry.
TESTSETS: dict[str, str] = {
    "flickr": "flickr", "vggss": "vggss", "vggss_heard": "vggss", "vggss_unheard": "vggss", "avsbench_s4": "mask",
    "flickr_extended": "flickr", "vggss_extended": "vggss",
}
#: The extended test sets (SLAVC, Mo and Morgado, NeurIPS 2022): the annotated set they extend, and the list of
#: their negatives as distributed (csv ``video,audio,label``; every row ``non-sounding``: the frame of clip ``video``
#: heard with the audio of clip ``audio``, silent or with its source off screen).
EXTENDED_TESTSETS: dict[str, tuple[str, str]] = {
    "flickr_extended": ("flickr", "flickr_test_plus_silent.csv"),
    "vggss_extended": ("vggss", "vggss_test_plus_silent.csv"),
}

#: The stamps benchmark's root, as ``fnac-lab stamps build``, ``prepare`` and ``cache`` (``make stamps-benchmark``)
#: lay it out: each real-data setting of a run on it, as a path under the root.
STAMPS_LAYOUT: dict[str, str] = {
    "cache_dir": "cache",  # the training clips' cache
    "train_ids": "train.csv",
    "train_labels": "train.csv",  # id,class: the false-negative ratio and class-biased sampling
    "test_annotations": "vggss.json",  # VGG-SS-style boxes of every validation and test clip
    "val_split_csv": "val.csv",  # model selection
    "test_split_csv": "test_heard.csv",  # the reported test: training stamps in new pictures and cuts
}
