"""Conformance cases not yet matched, with the reason. Each entry is an xfail(strict=True): when a case
starts passing, its test fails until the entry is removed here."""
PENDING: dict[str, str] = {
    "batch3_from_batch_idx1_euler": "unknown node types: LatentFromBatch",
    "batch3_from_batch_idx1_euler_ancestral": "unknown node types: LatentFromBatch",
    "batch3_seed_behavior_fixed": "unknown node types: LatentBatchSeedBehavior",
    "image_blur_r2_s1": "unknown node types: ImageBlur",
    "image_sharpen_r1_s1_a1": "unknown node types: ImageSharpen",
    "latent_add": "unknown node types: LatentAdd",
    "latent_blend_03": "unknown node types: LatentBlend",
    "latent_composite_feather16": "unknown node types: LatentComposite",
    "latent_composite_masked_left": "unknown node types: LatentCompositeMasked",
    "latent_composite_x32": "unknown node types: LatentComposite",
    "latent_flip_y_axis": "unknown node types: LatentFlip",
    "latent_interpolate_05": "unknown node types: LatentInterpolate",
    "latent_multiply_15": "unknown node types: LatentMultiply",
    "latent_rotate_90": "unknown node types: LatentRotate",
}
