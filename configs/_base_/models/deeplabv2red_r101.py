# DAFormer's 'dlv2red' network: DeepLab-V2 R101 whose ASPP classifier uses
# only the dilations 6 and 12, as the AdaptSegNet-lineage code effectively
# does (lhoyer/DAFormer configs/_base_/models/deeplabv2red_r50-d8.py with the
# r101v1c backbone of experiments.py).
_base_ = ['./deeplabv2_r101.py']
model = dict(decode_head=dict(dilations=(6, 12)))
