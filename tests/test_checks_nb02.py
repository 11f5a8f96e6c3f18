"""Checks of notebook 02: the reference passes; typical wrong answers get ✗ with the right hint."""
import numpy as np
import pytest
import torch

from mmcourse import checks, image
from mmcourse.checks import nb02

MEAN = np.array(image.IMAGENET_MEAN, dtype=np.float32)[:, None, None]
STD = np.array(image.IMAGENET_STD, dtype=np.float32)[:, None, None]


def _stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("check, ref", [
    (nb02.check_to_model_input, image.to_model_input),
    (nb02.check_patchify, image.patchify),
    (nb02.check_vit_tokens, image.vit_tokens),
    (nb02.check_probe_accuracy, image.probe_with_cv),
])
def test_reference_passes_and_stub_is_pending(lenient, capsys, check, ref):
    check(ref)
    out = capsys.readouterr().out
    assert "✓" in out and "✗" not in out
    check(_stub)
    out = capsys.readouterr().out
    assert "pending" in out and "✗" not in out


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("wrong, hint", [
    (lambda im: _t((im / 255.0 - MEAN[:, 0, 0]) / STD[:, 0, 0]).float(), "channels-last"),
    (lambda im: _t((im.T / 255.0 - MEAN) / STD).float(), "height and width are swapped"),
    (lambda im: _t(im.transpose(2, 0, 1)), "convert to float"),
    (lambda im: _t((im.transpose(2, 0, 1) / 255.0 - MEAN) / STD), "float32"),
    (lambda im: _t(im.transpose(2, 0, 1) / 255.0).float(), "forgot the normalisation"),
    (lambda im: _t((im.transpose(2, 0, 1) - MEAN) / STD).float(), "forgot to divide by 255"),
    (lambda im: _t(im.transpose(2, 0, 1) / 255.0 - MEAN).float(), "did not divide by the std"),
    (lambda im: None, "return"),
])
def test_to_model_input_mistakes(lenient, capsys, wrong, hint):
    nb02.check_to_model_input(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out, out


def _grid(x, p):
    b, c, h, w = x.shape
    return x.reshape(b, c, h // p, p, w // p, p), (b, (h // p) * (w // p), c * p * p)


def _patches_hwc(x, p):
    g, shape = _grid(x, p)
    return g.permute(0, 2, 4, 3, 5, 1).reshape(shape)  # (row, col, channel) inside a patch


def _patches_column_major(x, p):
    g, shape = _grid(x, p)
    return g.permute(0, 4, 2, 1, 3, 5).reshape(shape)


def _patches_off_by_one(x, p):
    b, c, h, w = x.shape
    rows = [x[:, :, i:i + p, j:j + p].reshape(b, -1) for i in range(0, h - p, p) for j in range(0, w - p, p)]
    return torch.stack(rows, dim=1)


@pytest.mark.parametrize("wrong, hint", [
    (_patches_hwc, "(row, column, channel)"),
    (_patches_column_major, "wrong patch order"),
    (lambda x, p: x.reshape(x.shape[0], -1, x.shape[1] * p * p), "plain reshape"),
    (_patches_off_by_one, "off by one"),
    (lambda x, p: torch.nn.functional.unfold(x, p, stride=p), "unfold"),
    (lambda x, p: _grid(x, p)[0].permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], -1, x.shape[1], p, p), "flatten each patch"),
])
def test_patchify_mistakes(lenient, capsys, wrong, hint):
    nb02.check_patchify(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out, out


def _tokens(no_cls=False, no_pos=False, no_bias=False, cls_last=False):
    def f(x, weight, bias, cls, pos, p):
        t = image.patchify(x, p) @ weight.T + (0 if no_bias else bias)
        c = cls.expand(x.shape[0], 1, -1)
        if no_cls:
            return t + pos[1:]
        t = torch.cat([t, c] if cls_last else [c, t], dim=1)
        return t if no_pos else t + pos
    return f


@pytest.mark.parametrize("wrong, hint", [
    (_tokens(no_cls=True), "off by one"),
    (_tokens(no_pos=True), "position embeddings"),
    (_tokens(no_bias=True), "bias"),
    (_tokens(cls_last=True), "goes first"),
    (lambda x, w, b, c, pos, p: image.patchify(x, p) @ w + b, "vit_tokens"),  # forgot the transpose: crashes
])
def test_vit_tokens_mistakes(lenient, capsys, wrong, hint):
    nb02.check_vit_tokens(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out, out


def _probe(score_on_train=False, percent=False, error=False, raw=False, predictions=False, leaky_scaler=False,
           c_on_eval=False, accuracy_only=False, scaler_on_eval=False):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model(c):
        lr = LogisticRegression(C=c, max_iter=2000)
        scaled_already = leaky_scaler or scaler_on_eval  # (a second, train-fitted scaler would undo the leak)
        return lr if raw or scaled_already else make_pipeline(StandardScaler(), lr)

    def f(xt, yt, xe, ye, cs=image.PROBE_CS):
        if leaky_scaler or scaler_on_eval:  # the leaks: a scaler that saw the evaluation features
            scaler = StandardScaler().fit(xe if scaler_on_eval else np.vstack([xt, xe]))
            xt, xe = scaler.transform(xt), scaler.transform(xe)
        if c_on_eval:  # C picked by its evaluation score
            c = max(cs, key=lambda c: model(c).fit(xt, yt).score(xe, ye))
        else:
            c = max(cs, key=lambda c: cross_val_score(model(c), xt, yt, cv=5).mean())
        clf = model(c).fit(xt, yt)
        if predictions:
            return clf.predict(xe), c
        acc = clf.score(xt, yt) if score_on_train else clf.score(xe, ye)
        acc = 100 * acc if percent else (1 - acc if error else acc)
        return acc if accuracy_only else (acc, c)
    return f


def test_probe_accepts_other_cross_validation_schemes(lenient, capsys):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def with_lrcv(xt, yt, xe, ye, cs=image.PROBE_CS):
        m = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(cs), max_iter=2000)).fit(xt, yt)
        return m.score(xe, ye), m[-1].C_[0]

    for fn in (_probe(), with_lrcv):
        nb02.check_probe_accuracy(fn)
        out = capsys.readouterr().out
        assert "✗" not in out and "eval set unseen" in out, out


@pytest.mark.parametrize("wrong, hint", [
    (_probe(score_on_train=True), "TRAINING set"),
    (_probe(percent=True), "percentage"),
    (_probe(error=True), "error rate"),
    (_probe(raw=True), "standardise"),
    (_probe(predictions=True), "a pair (accuracy, chosen C) of numbers"),
    (_probe(accuracy_only=True), "return the chosen C as well"),
    (_probe(c_on_eval=True), "cross-validation on the training data only"),
    (_probe(leaky_scaler=True), "fit the StandardScaler on the training data only"),
    (_probe(scaler_on_eval=True), "fit the StandardScaler on the training data only"),
])
def test_probe_accuracy_mistakes(lenient, capsys, wrong, hint):
    nb02.check_probe_accuracy(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out, out


def test_the_leaky_scaler_is_caught_in_strict_mode(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="nothing fitted on the evaluation set"):
        nb02.check_probe_accuracy(_probe(leaky_scaler=True))


@pytest.mark.parametrize("check, right, wrong", [
    (nb02.check_quiz_2_1, 301, 300),
    (nb02.check_quiz_2_2, "b", "a"),
    (nb02.check_quiz_2_3, 58.4, 255),
])
def test_quiz_items(quiz_behaviour, check, right, wrong):
    quiz_behaviour(check, right, wrong)


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="wrong patch order"):
        nb02.check_patchify(_patches_column_major)
    with pytest.raises(checks.CheckFailed, match="pending"):
        nb02.check_vit_tokens(_stub)
