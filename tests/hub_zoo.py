"""keras-hub models with tiny configurations and random weights (never a preset download).

``HUB`` maps a short name to a builder; each builds one model from its constructor,
with arguments taken from (or shrunk from) keras-hub's own tests. Image backbones,
the image task models built on them (classifiers, segmenters, detectors, depth
estimators) and a few text backbones (integer inputs, no BatchNormalization).
``bench/third_party.py`` folds all of them; ``tests/folding/test_hub.py`` a subset.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

IMAGE = (32, 32, 3)


def _models():
    import keras_hub

    return keras_hub.models


def _tiny_resnet(block_type: str, stem=(64,), **settings) -> keras.Model:
    return _models().ResNetBackbone(
        input_conv_filters=list(stem),
        input_conv_kernel_sizes=[3] * len(stem),
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type=block_type,
        image_shape=IMAGE,
        **settings,
    )


def resnet() -> keras.Model:
    return _tiny_resnet("bottleneck_block")


def resnet_v2() -> keras.Model:
    return _tiny_resnet("basic_block", use_pre_activation=True)


def resnet_vd() -> keras.Model:
    return _tiny_resnet("bottleneck_block_vd", stem=(8, 8, 16))


def mobilenet() -> keras.Model:
    return _models().MobileNetBackbone(
        stackwise_expansion=[[1], [4]],
        stackwise_num_blocks=[1, 1],
        stackwise_num_filters=[[8], [16]],
        stackwise_kernel_size=[[3], [5]],
        stackwise_num_strides=[[2], [2]],
        stackwise_se_ratio=[[0.25], [0.25]],
        stackwise_activation=[["relu"], ["hard_swish"]],
        stackwise_padding=[[1], [2]],
        output_num_filters=32,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=32,
        squeeze_and_excite=0.25,
        image_shape=IMAGE,
        input_num_filters=8,
    )


def mobilenetv5() -> keras.Model:
    return _models().MobileNetV5Backbone(
        stackwise_block_types=[["er"], ["uir", "uir"]],
        stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[16], [24, 24]],
        stackwise_strides=[[2], [2, 1]],
        stackwise_act_layers=[["relu"], ["relu", "relu"]],
        stackwise_exp_ratios=[[4.0], [4.0, 4.0]],
        stackwise_se_ratios=[[0.0], [0.0, 0.0]],
        stackwise_dw_kernel_sizes=[[0], [5, 5]],
        stackwise_dw_start_kernel_sizes=[[0], [0, 0]],
        stackwise_dw_end_kernel_sizes=[[0], [0, 0]],
        stackwise_exp_kernel_sizes=[[3], [0, 0]],
        stackwise_pw_kernel_sizes=[[1], [0, 0]],
        stackwise_num_heads=[[0], [0, 0]],
        stackwise_key_dims=[[0], [0, 0]],
        stackwise_value_dims=[[0], [0, 0]],
        stackwise_kv_strides=[[0], [0, 0]],
        stackwise_use_cpe=[[False], [False, False]],
        image_shape=IMAGE,
        stem_size=16,
        use_msfa=False,
    )


def cspdarknet() -> keras.Model:
    return _models().CSPNetBackbone(
        stem_filters=8,
        stem_kernel_size=3,
        stem_strides=1,
        stackwise_depth=[1, 1],
        stackwise_strides=[1, 2],
        stackwise_num_filters=[8, 16],
        block_type="dark_block",
        stage_type="dark",
        image_shape=IMAGE,
    )


def cspnet() -> keras.Model:
    return _models().CSPNetBackbone(
        stem_filters=16,
        stem_kernel_size=3,
        stem_strides=1,
        stackwise_strides=2,
        stackwise_depth=[1, 2],
        stackwise_num_filters=[16, 24],
        down_growth=True,
        bottle_ratio=(0.5, 1.0),
        block_ratio=(1.0, 0.5),
        expand_ratio=(2.0, 1.0),
        block_type="dark_block",
        stage_type="csp",
        stem_padding="same",
        image_shape=IMAGE,
    )


def efficientnet() -> keras.Model:
    return _models().EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3],
        stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16],
        stackwise_expansion_ratios=[1, 4],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_strides=[1, 2],
        stackwise_block_types=["v1", "v1"],
        stackwise_width_coefficients=[1.0, 1.0],
        stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False],
        input_shape=IMAGE,
        num_features=32,
    )


def efficientnet_v2() -> keras.Model:
    return _models().EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3, 3],
        stackwise_num_repeats=[1, 1, 1],
        stackwise_input_filters=[8, 8, 16],
        stackwise_output_filters=[8, 16, 16],
        stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25],
        stackwise_strides=[1, 2, 1],
        stackwise_block_types=["fused", "fused", "unfused"],
        stackwise_width_coefficients=[1.0, 1.0, 1.0],
        stackwise_depth_coefficients=[1.0, 1.0, 1.0],
        stackwise_force_input_filters=[0, 0, 0],
        stackwise_nores_option=[False, False, False],
        include_stem_padding=False,
        use_depth_divisor_as_min_depth=True,
        cap_round_filter_decrease=True,
        stem_conv_padding="same",
        batch_norm_momentum=0.9,
        batch_norm_epsilon=1e-3,
        input_shape=IMAGE,
        num_features=32,
    )


def densenet() -> keras.Model:
    return _models().DenseNetBackbone(
        stackwise_num_repeats=[1, 1], image_shape=IMAGE, growth_rate=8
    )


def vgg() -> keras.Model:
    return _models().VGGBackbone(
        stackwise_num_repeats=[1, 2], stackwise_num_filters=[8, 16], image_shape=(16, 16, 3)
    )


def xception() -> keras.Model:
    return _models().XceptionBackbone(
        stackwise_conv_filters=[[8, 16], [32, 32], [32, 32]],
        stackwise_pooling=[False, True, False],
        image_shape=(96, 96, 3),
    )


def hgnetv2(learnable_affine: bool = False, light: bool = False) -> keras.Model:
    return _models().HGNetV2Backbone(
        embedding_size=16,
        stem_channels=[3, 8, 16],
        hidden_act="relu",
        use_learnable_affine_block=learnable_affine,
        image_shape=(64, 64, 3),
        depths=[1, 1],
        hidden_sizes=[32, 64],
        stackwise_stage_filters=[[16, 8, 32, 1, 1, 3], [32, 16, 64, 1, 1, 3]],
        apply_downsample=[False, True],
        use_lightweight_conv_block=[light, light],
        out_features=["stem", "stage1", "stage2"],
    )


def vit() -> keras.Model:
    return _models().ViTBackbone(
        image_shape=IMAGE, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    )


def deit() -> keras.Model:
    return _models().DeiTBackbone(
        image_shape=(28, 28, 3),
        patch_size=4,
        num_layers=2,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=32,
        use_mha_bias=True,
    )


def dinov2(swiglu: bool = False) -> keras.Model:
    return _models().DINOV2Backbone(
        patch_size=14,
        num_layers=2,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=64,
        layer_scale_init_value=1.0,
        num_register_tokens=4 if swiglu else 0,
        use_swiglu_ffn=swiglu,
        image_shape=(70, 70, 3),
    )


def dinov3() -> keras.Model:
    return _models().DINOV3Backbone(
        patch_size=16,
        num_layers=2,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=64,
        layer_scale_init_value=1.0,
        num_register_tokens=4,
        use_gated_mlp=False,
        image_shape=(64, 64, 3),
    )


def mit() -> keras.Model:
    return _models().MiTBackbone(
        layerwise_depths=[1, 1],
        image_shape=IMAGE,
        hidden_dims=[4, 8],
        num_layers=2,
        layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[4, 2],
        max_drop_path_rate=0.1,
        layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2],
    )


def swin() -> keras.Model:
    return _models().SwinTransformerBackbone(
        image_shape=IMAGE, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4
    )


def vit_det() -> keras.Model:
    return _models().ViTDetBackbone(
        image_shape=(16, 16, 3),
        patch_size=2,
        hidden_size=4,
        num_layers=2,
        global_attention_layer_indices=[1],
        intermediate_dim=16,
        num_heads=2,
        num_output_channels=2,
        window_size=2,
    )


def clip_vision() -> keras.Model:
    return _models().CLIPVisionEncoder(16, 16, 2, 2, 32, image_shape=IMAGE)


def siglip_vision() -> keras.Model:
    return _models().SigLIPVisionEncoder(16, 16, 2, 2, 32, image_shape=IMAGE)


def basnet() -> keras.Model:
    encoder = _models().ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 64, 64, 64],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
    )
    return _models().BASNetBackbone(image_encoder=encoder, num_classes=1, image_shape=(32, 32, 3))


def deeplab_v3() -> keras.Model:
    return _models().DeepLabV3Backbone(
        image_encoder=_resnet_encoder((64, 64, 3)),
        low_level_feature_key="P2",
        spatial_pyramid_pooling_key="P4",
        dilation_rates=[2, 4],
        upsampling_size=4,
        projection_filters=8,
        image_shape=(64, 64, 3),
    )


def _resnet_encoder(image) -> keras.Model:
    return _models().ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 8, 8],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        image_shape=image,
    )


def retinanet() -> keras.Model:
    return _models().RetinaNetBackbone(
        image_encoder=_resnet_encoder((64, 64, 3)),
        min_level=3,
        max_level=4,
        use_p5=False,
        image_shape=(64, 64, 3),
    )


def depth_anything() -> keras.Model:
    encoder = _models().DINOV2Backbone(
        14, 4, 16, 2, 64, 1.0, 0, image_shape=(126, 126, 3), apply_layernorm=True
    )
    return _models().DepthAnythingBackbone(
        image_encoder=encoder,
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_dims=[8, 8, 8, 8],
        fusion_hidden_dim=8,
        head_hidden_dim=8,
        head_in_index=-1,
        feature_keys=["stage1", "stage2", "stage3", "stage4"],
    )


def segformer() -> keras.Model:
    return _models().SegFormerBackbone(image_encoder=mit(), projection_filters=8)


# -- task models on those backbones ------------------------------------------------


def resnet_classifier() -> keras.Model:
    return _models().ResNetImageClassifier(backbone=resnet(), num_classes=4)


def efficientnet_classifier() -> keras.Model:
    return _models().EfficientNetImageClassifier(backbone=efficientnet(), num_classes=4)


def mobilenet_classifier() -> keras.Model:
    return _models().MobileNetImageClassifier(backbone=mobilenet(), num_classes=4)


def vgg_classifier() -> keras.Model:
    backbone = _models().VGGBackbone(
        stackwise_num_repeats=[1, 1, 1], stackwise_num_filters=[8, 8, 16], image_shape=(56, 56, 3)
    )
    return _models().VGGImageClassifier(backbone=backbone, num_classes=4, pooling_hidden_dim=16)


def vit_classifier() -> keras.Model:
    return _models().ViTImageClassifier(backbone=vit(), num_classes=4)


def hgnetv2_classifier() -> keras.Model:
    return _models().HGNetV2ImageClassifier(backbone=hgnetv2(), preprocessor=None, num_classes=4)


def deeplab_v3_segmenter() -> keras.Model:
    return _models().DeepLabV3ImageSegmenter(backbone=deeplab_v3(), num_classes=2)


def segformer_segmenter() -> keras.Model:
    return _models().SegFormerImageSegmenter(backbone=segformer(), num_classes=2)


def basnet_segmenter() -> keras.Model:
    return _models().BASNetImageSegmenter(backbone=basnet())


def retinanet_detector() -> keras.Model:
    from keras_hub.layers import AnchorGenerator

    anchors = AnchorGenerator(
        bounding_box_format="yxyx",
        min_level=3,
        max_level=4,
        num_scales=1,
        aspect_ratios=[1.0],
        anchor_size=4,
    )
    return _models().RetinaNetObjectDetector(
        backbone=retinanet(),
        anchor_generator=anchors,
        num_classes=3,
        bounding_box_format="yxyx",
    )


def depth_anything_estimator() -> keras.Model:
    return _models().DepthAnythingDepthEstimator(
        backbone=depth_anything(), depth_estimation_type="metric", max_depth=10.0
    )


# -- text backbones: integer token ids, no BatchNormalization ------------------------


TINY_TEXT = {
    "vocabulary_size": 50,
    "num_layers": 1,
    "num_heads": 2,
    "hidden_dim": 8,
    "intermediate_dim": 16,
    "max_sequence_length": 8,
}
"""The smallest transformer each text backbone is built as."""


def bert() -> keras.Model:
    return _models().BertBackbone(**TINY_TEXT)


def distil_bert() -> keras.Model:
    return _models().DistilBertBackbone(**TINY_TEXT)


def albert() -> keras.Model:
    return _models().AlbertBackbone(
        **TINY_TEXT, num_groups=1, num_inner_repetitions=1, embedding_dim=8
    )


def roberta() -> keras.Model:
    return _models().RobertaBackbone(**TINY_TEXT)


def f_net() -> keras.Model:
    settings = {key: value for key, value in TINY_TEXT.items() if key != "num_heads"}
    return _models().FNetBackbone(**settings)


def gpt2() -> keras.Model:
    return _models().GPT2Backbone(**TINY_TEXT)


HUB: dict[str, Callable[[], keras.Model]] = {
    "resnet": resnet,
    "resnet_v2": resnet_v2,
    "resnet_vd": resnet_vd,
    "mobilenet": mobilenet,
    "mobilenetv5": mobilenetv5,
    "cspdarknet": cspdarknet,
    "cspnet": cspnet,
    "efficientnet": efficientnet,
    "efficientnet_v2": efficientnet_v2,
    "densenet": densenet,
    "vgg": vgg,
    "xception": xception,
    "hgnetv2": hgnetv2,
    "hgnetv2_light_lab": lambda: hgnetv2(learnable_affine=True, light=True),
    "vit": vit,
    "deit": deit,
    "dinov2": dinov2,
    "dinov2_swiglu": lambda: dinov2(swiglu=True),
    "dinov3": dinov3,
    "mit": mit,
    "swin": swin,
    "vit_det": vit_det,
    "clip_vision": clip_vision,
    "siglip_vision": siglip_vision,
    "basnet": basnet,
    "deeplab_v3": deeplab_v3,
    "retinanet": retinanet,
    "depth_anything": depth_anything,
    "segformer": segformer,
    "resnet classifier": resnet_classifier,
    "efficientnet classifier": efficientnet_classifier,
    "mobilenet classifier": mobilenet_classifier,
    "vgg classifier": vgg_classifier,
    "vit classifier": vit_classifier,
    "hgnetv2 classifier": hgnetv2_classifier,
    "deeplab_v3 segmenter": deeplab_v3_segmenter,
    "segformer segmenter": segformer_segmenter,
    "basnet segmenter": basnet_segmenter,
    "retinanet detector": retinanet_detector,
    "depth_anything estimator": depth_anything_estimator,
    "bert": bert,
    "distil_bert": distil_bert,
    "albert": albert,
    "roberta": roberta,
    "f_net": f_net,
    "gpt2": gpt2,
}
