"""keras-cv (0.9) models with small configurations and random weights (never a preset
download: keras-cv's aliases and ``from_preset`` fetch their configuration, so every
model here is built from its base class with the configuration written out).

``KERAS_CV`` maps a short name to a builder: every image backbone family (ResNet V1/V2,
CSPDarkNet, DenseNet, EfficientNet V1/V2/Lite, MobileNetV3, MiT, ViTDet, YOLOV8) and the
task models on them (classifier, RetinaNet, YOLOV8 detector, DeepLabV3+, SegFormer,
BASNet). ``bench/third_party.py --only keras-cv`` folds all of them;
``tests/folding/test_kerascv.py`` a subset.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

IMAGE = (64, 64, 3)


def _models():
    import keras_cv

    return keras_cv.models


def resnet_v1(block_type: str = "basic_block", image=IMAGE) -> keras.Model:
    return _models().ResNetBackbone(
        stackwise_filters=[64, 32, 32, 64],  # a basic block takes the stem's 64 first
        stackwise_blocks=[1, 1, 1, 1],
        stackwise_strides=[1, 2, 2, 2],
        include_rescaling=True,
        block_type=block_type,
        input_shape=image,
    )


def resnet_v1_bottleneck() -> keras.Model:
    return resnet_v1("block")


def resnet_v2(block_type: str = "basic_block") -> keras.Model:
    # two blocks a stack: with one, keras-cv names two of its layers alike
    return _models().ResNetV2Backbone(
        stackwise_filters=[64, 32, 32, 64],  # a basic block takes the stem's 64 first
        stackwise_blocks=[2, 2, 2, 2],
        stackwise_strides=[1, 2, 2, 2],
        include_rescaling=False,
        block_type=block_type,
        input_shape=IMAGE,
    )


def resnet_v2_bottleneck() -> keras.Model:
    return resnet_v2("block")


def cspdarknet(use_depthwise: bool = False) -> keras.Model:
    return _models().CSPDarkNetBackbone(
        stackwise_channels=[16, 32, 64, 128],
        stackwise_depth=[1, 1, 1, 1],
        include_rescaling=False,
        use_depthwise=use_depthwise,
        input_shape=IMAGE,
    )


def cspdarknet_depthwise() -> keras.Model:
    return cspdarknet(use_depthwise=True)


def densenet() -> keras.Model:
    return _models().DenseNetBackbone(
        stackwise_num_repeats=[2, 2, 2, 2],
        include_rescaling=False,
        growth_rate=8,
        input_shape=IMAGE,
    )


def efficientnet_v1() -> keras.Model:
    return _models().EfficientNetV1Backbone(
        stackwise_kernel_sizes=[3, 3, 5],
        stackwise_num_repeats=[1, 2, 1],
        stackwise_input_filters=[16, 8, 16],
        stackwise_output_filters=[8, 16, 24],
        stackwise_expansion_ratios=[1, 6, 6],
        stackwise_strides=[1, 2, 2],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25, 0.25],
        width_coefficient=1.0,
        depth_coefficient=1.0,
        include_rescaling=True,
        input_shape=IMAGE,
    )


def efficientnet_v2() -> keras.Model:
    return _models().EfficientNetV2Backbone(
        stackwise_kernel_sizes=[3, 3, 3],
        stackwise_num_repeats=[1, 2, 2],
        stackwise_input_filters=[16, 16, 24],
        stackwise_output_filters=[16, 24, 32],
        stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25],
        stackwise_strides=[1, 2, 2],
        stackwise_conv_types=["fused", "fused", "unfused"],
        width_coefficient=1.0,
        depth_coefficient=1.0,
        include_rescaling=True,
        input_shape=IMAGE,
    )


def efficientnet_lite() -> keras.Model:
    return _models().EfficientNetLiteBackbone(
        stackwise_kernel_sizes=[3, 3, 5],
        stackwise_num_repeats=[1, 2, 1],
        stackwise_input_filters=[16, 8, 16],
        stackwise_output_filters=[8, 16, 24],
        stackwise_expansion_ratios=[1, 6, 6],
        stackwise_strides=[1, 2, 2],
        width_coefficient=1.0,
        depth_coefficient=1.0,
        include_rescaling=False,
        input_shape=IMAGE,
    )


def mobilenet_v3() -> keras.Model:
    return _models().MobileNetV3Backbone(
        stackwise_expansion=[1, 72.0 / 16, 4, 6],
        stackwise_filters=[16, 24, 40, 48],
        stackwise_kernel_size=[3, 3, 5, 5],
        stackwise_stride=[2, 2, 2, 1],
        stackwise_se_ratio=[0.25, None, 0.25, 0.25],
        stackwise_activation=["relu", "relu", "hard_swish", "hard_swish"],
        include_rescaling=True,
        input_shape=IMAGE,
    )


def mit() -> keras.Model:
    return _models().MiTBackbone(
        include_rescaling=False,
        depths=[1, 1, 1, 1],
        embedding_dims=[8, 16, 40, 64],  # multiples of its heads, 1, 2, 5, 8
        input_shape=IMAGE,
    )


def vit_det() -> keras.Model:
    return _models().ViTDetBackbone(
        include_rescaling=False,
        input_shape=IMAGE,
        patch_size=16,
        embed_dim=32,
        depth=2,
        mlp_dim=64,
        num_heads=2,
        out_chans=16,
        window_size=2,
        global_attention_indices=[1],
    )


def yolo_v8() -> keras.Model:
    return _models().YOLOV8Backbone(
        stackwise_channels=[16, 32, 64, 128],
        stackwise_depth=[1, 1, 1, 1],
        include_rescaling=False,
        input_shape=IMAGE,
    )


def classifier() -> keras.Model:
    return _models().ImageClassifier(backbone=resnet_v2(), num_classes=10, activation=None)


def retinanet() -> keras.Model:
    return _models().RetinaNet(backbone=resnet_v1(), num_classes=4, bounding_box_format="xywh")


def yolo_v8_detector() -> keras.Model:
    return _models().YOLOV8Detector(
        backbone=yolo_v8(), num_classes=4, bounding_box_format="xywh", fpn_depth=1
    )


def deeplab_v3_plus() -> keras.Model:
    return _models().DeepLabV3Plus(backbone=resnet_v2(), num_classes=3, projection_filters=16)


def segformer() -> keras.Model:
    return _models().SegFormer(backbone=mit(), num_classes=3, projection_filters=16)


def basnet() -> keras.Model:
    return _models().BASNet(
        backbone=resnet_v1(image=(None, None, 3)),  # BASNet takes the input shape itself
        num_classes=1,
        input_shape=IMAGE,  # its refinement head's blocks take 64 channels: no fewer filters
    )


KERAS_CV: dict[str, Callable[[], keras.Model]] = {
    "resnet_v1": resnet_v1,
    "resnet_v1_bottleneck": resnet_v1_bottleneck,
    "resnet_v2": resnet_v2,
    "resnet_v2_bottleneck": resnet_v2_bottleneck,
    "cspdarknet": cspdarknet,
    "cspdarknet_depthwise": cspdarknet_depthwise,
    "densenet": densenet,
    "efficientnet_v1": efficientnet_v1,
    "efficientnet_v2": efficientnet_v2,
    "efficientnet_lite": efficientnet_lite,
    "mobilenet_v3": mobilenet_v3,
    "mit": mit,
    "vit_det": vit_det,
    "yolo_v8": yolo_v8,
    "classifier": classifier,
    "retinanet": retinanet,
    "yolo_v8_detector": yolo_v8_detector,
    "deeplab_v3_plus": deeplab_v3_plus,
    "segformer": segformer,
    "basnet": basnet,
}
