"""Procedural street scenes: the library's embedded default dataset.

Every scene is drawn from one seed by a small renderer with a z-buffer (so occlusion follows
depth exactly, as painting far to near would): sky, a ground plane (road with lane markings,
kerbs, pavements, verges), building facades with windows along both sides of the street, a
distant skyline, trees and hedges, fences, poles carrying lamps, signs and traffic lights,
and cars, pedestrians and cyclists standing on the ground at perspective-correct scales.
Colour is deliberately a poor cue: facades, pavements, road and overcast sky share greys, cars
and clothes take any colour, and every scene gets its own colour cast, illumination gradient,
haze, shadows and sensor noise. What stays consistent is shape, context and texture.

The classes and ids are CamVid's 11 (with CamVid's usual colours), so models and tools built
for CamVid run unchanged. The camera and the geometry of the scenes are described in
:mod:`~leanseg.data.synthetic.camera`; use :func:`scene_rig` to get a scene's camera without
rendering it.

The public names are those below, imported from this package. Its modules, each importing only
the ones listed before it:

- ``labels``: class names, colours and ids; ``camera``: the stereo rig;
- ``colours``, ``shapes``: random colours, and shape masks in metres;
- ``canvas``: the image, label, instance and depth buffers and how to paint into them;
- ``street``: the street's cross-section;
- ``ground``, ``buildings``, ``roadside``, ``things``: what each kind of object looks like;
- ``layout``: what stands where along the street;
- ``maps``: disparity and instance maps, and the 16-bit disparity encoding;
- ``scene``: :func:`generate_scene`, the order a scene is drawn in;
- ``splits``: the splits and the seed of each scene; ``files``: writing scenes to disk;
- ``dataset``: :class:`SyntheticStreetScenes`.
"""

from __future__ import annotations

from leanseg.data.synthetic.camera import BASELINE, StereoRig, scene_rig
from leanseg.data.synthetic.dataset import SyntheticStreetScenes
from leanseg.data.synthetic.files import MANIFEST, write_dataset
from leanseg.data.synthetic.labels import (
    BICYCLIST,
    BUILDING,
    CAR,
    CLASSES,
    FENCE,
    PALETTE,
    PAVEMENT,
    PEDESTRIAN,
    POLE,
    ROAD,
    SIGN,
    SKY,
    THING_CLASSES,
    TREE,
)
from leanseg.data.synthetic.maps import decode_disparity, encode_disparity
from leanseg.data.synthetic.scene import GENERATOR_VERSION, generate_scene
from leanseg.data.synthetic.splits import SPLITS, scene_seed

__all__ = [
    "BASELINE",
    "BICYCLIST",
    "BUILDING",
    "CAR",
    "CLASSES",
    "FENCE",
    "GENERATOR_VERSION",
    "MANIFEST",
    "PALETTE",
    "PAVEMENT",
    "PEDESTRIAN",
    "POLE",
    "ROAD",
    "SIGN",
    "SKY",
    "SPLITS",
    "StereoRig",
    "SyntheticStreetScenes",
    "THING_CLASSES",
    "TREE",
    "decode_disparity",
    "encode_disparity",
    "generate_scene",
    "scene_rig",
    "scene_seed",
    "write_dataset",
]
