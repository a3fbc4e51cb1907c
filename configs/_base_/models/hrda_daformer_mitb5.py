# HRDA network (Hoyer et al., ECCV 2022): the DAFormer network
# (daformer_mitb5.py: MiT-B5 + DAFormer head with sep. ASPP fusion) wrapped
# into HRDA's multi-resolution segmentor and head. Every value follows
# lhoyer/HRDA@c370b5b configs/hrda/gtaHR2csHR_hrda.py (model block) and the
# defaults of mmseg/models/segmentors/hrda_encoder_decoder.py and
# mmseg/models/decode_heads/hrda_head.py. Plain mmseg segmentor: the UDA
# configs wrap it in UDASegmentor (configs/_base_/uda/hrda.py).
_base_ = ['./daformer_mitb5.py']
model = dict(
    type='HRDAEncoderDecoder',
    decode_head=dict(
        type='HRDAHead',
        # "Use the DAFormer decoder for each scale" (one head, shared by the
        # context and detail branches)
        single_scale_head='DAFormerHead',
        # scale attention per class channel (attention_classwise=True)
        attention_classwise=True,
        # attention head width; its sep. ASPP fusion becomes a 1x1 conv
        # (hrda_head.py defaults: attention_embed_dim=256)
        attention_embed_dim=256,
        # detail loss weight lambda_d = 0.1; no context-only loss
        # (hr_loss_weight=0.1, lr_loss_weight=0 default)
        hr_loss_weight=0.1,
        lr_loss_weight=0.0,
        # learnt attention (fixed_attention=None default)
        fixed_attention=None),
    # full resolution for the detail crop, half for the context crop
    # (scales=[1, 0.5]; sorted to context 0.5, detail 1)
    scales=[1, 0.5],
    # detail crop 512x512 inside the 1024x1024 training crop
    hr_crop_size=[512, 512],
    # feature distance on the context (LR) features, as DAFormer
    feature_scale=0.5,
    # box offsets divisible by 8 = output stride 4 / context scale 0.5
    crop_coord_divisible=8,
    # overlapping detail slide (stride 256) for pseudo-labels and test
    # windows (hr_slide_inference=True, hr_slide_overlapping=True default);
    # blur_hr_crop=False default
    hr_slide_inference=True,
    hr_slide_overlapping=True,
    blur_hr_crop=False,
    # test: 1024x1024 windows at stride 512 over the 2048x1024 image
    # (test_cfg mode='slide', stride=[512, 512], crop_size=[1024, 1024]).
    # HRDA batches the windows (batched_slide=True); mmseg's slide_inference
    # runs them one by one, which in eval mode gives the same logits.
    test_cfg=dict(mode='slide', stride=(512, 512), crop_size=(1024, 1024)))
