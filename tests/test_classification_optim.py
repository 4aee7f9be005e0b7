"""The training loop's arithmetic against hand computations: gradient accumulation, momentum SGD, AdamW with
decoupled weight decay on the decayed groups only, the head EMA after every update; and the precision choice
(autocast dtype, loss scaling) that GPUs get, decided here on the CPU."""
import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_vit_6b_family

from classification.checkpoint import TrainState
from classification.config import load_config
from classification.dataset import Batch, UnreadableImages
from classification.engine import Training, amp_dtype_for, build_criterion, needs_loss_scaling, train_one_epoch
from classification.model import InternViTClassifier
from classification.optim import HeadEma, LRSchedule, build_optimizer
from internvl import InternVisionModel
from internvl.train.distributed import DistInfo

CONFIG = "classification/configs/tiny/intern_vit_tiny_synthetic.yaml"
CLASSES, WIDTH, LR = 5, 128, 0.3  # the tiny backbone's [class token, mean patch token] is 2 x 64 wide


def setup(optimizer: str, accumulation: int, ema_decay: float = 0.0, weight_decay: float = 0.0):
    opts = ["MODEL.NUM_CLASSES", CLASSES, "TRAIN.OPTIMIZER.NAME", optimizer, "TRAIN.ACCUMULATION_STEPS", accumulation,
            "TRAIN.BASE_LR", LR, "TRAIN.WARMUP_EPOCHS", 0, "TRAIN.LR_SCHEDULER.NAME", "step",
            "TRAIN.LR_SCHEDULER.DECAY_EPOCHS", 100, "TRAIN.CLIP_GRAD", 0, "TRAIN.WEIGHT_DECAY", weight_decay,
            "TRAIN.EMA.ENABLE", ema_decay > 0, "TRAIN.EMA.DECAY", ema_decay or 0.5, "PRINT_FREQ", 100]
    config = load_config(CONFIG, [str(o) for o in opts])
    torch.manual_seed(0)
    model = InternViTClassifier(InternVisionModel(tiny_vit_6b_family()), CLASSES)
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.normal_(0, 0.1)
        model.head.weight.normal_(0, 0.3)
        model.head.bias.normal_(0, 0.1)
    g = torch.Generator().manual_seed(1)
    batches = [Batch(torch.randn(6, WIDTH, generator=g) * 2 + 1, torch.randint(0, CLASSES, (6,), generator=g),
                     torch.arange(6), []) for _ in range(4)]
    reference = copy.deepcopy(model)
    state = TrainState(model, build_optimizer(config, model), torch.amp.GradScaler("cpu", enabled=False),
                       HeadEma(model, ema_decay) if ema_decay else None, config)
    run = Training(state, model, build_criterion(config), LRSchedule.from_config(config, 2),
                   DistInfo(0, 1, 0, torch.device("cpu"), None), UnreadableImages(0), uses_features=True)
    return run, batches, reference


PARAMS = ("norm.weight", "norm.bias", "head.weight", "head.bias")


def mean_gradient(model, batches) -> dict:
    """The mean over micro-batches of each one's gradient of its mean cross-entropy, at the current weights."""
    params = dict(model.named_parameters())
    total = {name: torch.zeros_like(params[name]) for name in PARAMS}
    for batch in batches:
        loss = F.cross_entropy(model(features=batch.inputs), batch.targets)
        for name, grad in zip(PARAMS, torch.autograd.grad(loss, [params[n] for n in PARAMS])):
            total[name] += grad
    return {name: g / len(batches) for name, g in total.items()}


def test_accumulated_gradients_are_averaged_and_the_ema_follows_every_update():
    run, batches, ref = setup("sgd_linear_probing", accumulation=2, ema_decay=0.6)
    ref.train()
    params = dict(ref.named_parameters())
    ema = {k: v.clone() for k, v in ref.trainable_state_dict().items()}
    momentum = {}
    for update in range(2):  # 4 micro-batches, 2 per update: momentum SGD on their mean gradient
        grads = mean_gradient(ref, batches[2 * update:2 * update + 2])
        with torch.no_grad():
            for name, grad in grads.items():
                momentum[name] = grad if update == 0 else 0.9 * momentum[name] + grad
                params[name] -= LR * momentum[name]
        for key, value in ref.trainable_state_dict().items():  # the BatchNorm statistics are averaged too
            ema[key] = 0.6 * ema[key] + 0.4 * value if value.is_floating_point() else value.clone()

    train_one_epoch(run, batches)
    assert run.state.global_step == 2
    trained = run.state.classifier.trainable_state_dict()
    for key, expected in ref.trainable_state_dict().items():
        torch.testing.assert_close(trained[key], expected, rtol=1e-5, atol=1e-6, msg=key)
    for key, expected in ema.items():
        torch.testing.assert_close(run.state.ema.shadow[key], expected, rtol=1e-5, atol=1e-6, msg=f"EMA {key}")


def test_adamw_decays_the_weights_apart_from_the_adam_step_and_spares_norms_and_biases():
    run, batches, ref = setup("adamw", accumulation=1, weight_decay=0.05)
    optimizer = run.state.optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {n: g["weight_decay"] for g in optimizer.param_groups for n in g["names"]} == {
        "norm.weight": 0.0, "norm.bias": 0.0, "head.weight": 0.05, "head.bias": 0.0}
    ref.train()
    params = dict(ref.named_parameters())
    m = {n: torch.zeros_like(params[n]) for n in PARAMS}
    v = {n: torch.zeros_like(params[n]) for n in PARAMS}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in (1, 2):
        grads = mean_gradient(ref, batches[t - 1:t])
        with torch.no_grad():
            for name, grad in grads.items():
                if name == "head.weight":
                    params[name] *= 1 - LR * 0.05
                m[name] = beta1 * m[name] + (1 - beta1) * grad
                v[name] = beta2 * v[name] + (1 - beta2) * grad ** 2
                m_hat, v_hat = m[name] / (1 - beta1 ** t), v[name] / (1 - beta2 ** t)
                params[name] -= LR * m_hat / (v_hat.sqrt() + eps)

    train_one_epoch(run, batches[:2])
    trained = dict(run.state.classifier.named_parameters())
    for name in PARAMS:
        torch.testing.assert_close(trained[name], params[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("device, amp_type, opt_level, dtype, scaling", [
    ("cuda", "float16", "", torch.float16, True),  # fp16 gradients underflow: GradScaler on
    ("cuda", "bfloat16", "", torch.bfloat16, False),  # bf16 has fp32's range: no scaling
    ("cuda", "float16", "O0", None, False),  # O0: full precision
    ("cpu", "float16", "", None, False),  # CPUs run fp32
    ("cpu", "bfloat16", "O1", None, False),
])
def test_the_precision_a_gpu_run_gets(device, amp_type, opt_level, dtype, scaling):
    config = load_config(CONFIG, ["AMP_TYPE", amp_type, "AMP_OPT_LEVEL", opt_level])
    amp_dtype = amp_dtype_for(config, torch.device(device))
    assert amp_dtype == dtype and needs_loss_scaling(amp_dtype) == scaling
