"""Calibration observers (min-max, percentile) and the hook-based calibration of a torch model."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from tokensift.quant.calibrate import (
    OBSERVERS,
    MinMaxObserver,
    Observer,
    PercentileObserver,
    calibrate,
    make_observer,
)


class TestMinMax:
    def test_running_max(self):
        obs = MinMaxObserver()
        for batch in ([0.5, -3.0], [2.0], np.array([[1.0, -2.5]])):
            obs.update(np.asarray(batch))
        assert obs.absmax == 3.0 and obs.count == 5
        assert obs.scale() == 3.0 / 127
        assert obs.scale(bits=4) == 3.0 / 7

    def test_torch_tensors(self):
        obs = MinMaxObserver()
        obs.update(torch.tensor([[1.0, -4.0]], requires_grad=True))
        assert obs.absmax == 4.0

    def test_all_zero_gets_unit_scale(self):
        obs = MinMaxObserver()
        obs.update(np.zeros(4))
        assert obs.scale() == 1.0

    def test_empty_observer(self):
        with pytest.raises(ValueError, match=r"^the observer has seen no values; run calibration batches first$"):
            MinMaxObserver().scale()

    def test_rejects_nan(self):
        with pytest.raises(ValueError, match=r"^observed values must be finite, not NaN or infinity$"):
            MinMaxObserver().update(np.array([1.0, np.nan]))


class TestPercentile:
    def test_exact_when_everything_fits(self):
        obs = PercentileObserver(percentile=99.0)
        x = np.arange(1, 10001, dtype=np.float64)
        for chunk in np.split(x, 4):
            obs.update(-chunk)
        assert obs.absmax == pytest.approx(np.percentile(x, 99.0))
        assert obs.count == 10000

    def test_sampled_estimate_within_the_dkw_band(self):
        # DKW: with n samples, sup |F_n - F| <= eps with probability >= 1 - 2 exp(-2 n eps**2); for n = 4096
        # and a failure probability of 1e-9, eps = sqrt(ln(2e9) / (2 n)) = 0.0511. For the uniform values
        # 1..N, the 90th percentile estimate must therefore lie between the 84.9th and 95.1st percentiles.
        n = 4096
        eps = math.sqrt(math.log(2e9) / (2 * n))
        x = np.arange(1, 200_001, dtype=np.float64)
        obs = PercentileObserver(percentile=90.0, max_samples=n, seed=3)
        for chunk in np.array_split(x, 7):
            obs.update(chunk)
        lo, hi = np.percentile(x, [100 * (0.9 - eps), 100 * (0.9 + eps)])
        assert lo <= obs.absmax <= hi

    def test_sample_is_proportional_to_batch_sizes(self):
        obs = PercentileObserver(percentile=50.0, max_samples=400)
        obs.update(np.ones(1000))
        obs.update(np.full(3000, 2.0))
        # the second batch keeps ceil(400 * 3000 / 4000) = 300 of its values, the first 100 of its 400
        assert np.count_nonzero(obs._sample == 1.0) == 100
        assert np.count_nonzero(obs._sample == 2.0) == 300

    def test_clips_outliers(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=100_000)
        x[0] = 1000.0
        mm, pc = MinMaxObserver(), PercentileObserver(99.99)
        mm.update(x)
        pc.update(x)
        assert mm.absmax == 1000.0 and pc.absmax < 5.0

    def test_deterministic(self):
        def run():
            obs = PercentileObserver(99.0, max_samples=100, seed=7)
            for i in range(5):
                obs.update(np.random.default_rng(i).normal(size=1000))
            return obs.absmax

        assert run() == run()

    def test_hundredth_percentile_is_the_max(self):
        obs = PercentileObserver(100.0, max_samples=10)
        obs.update(np.arange(1000.0))
        assert obs.absmax == 999.0

    @pytest.mark.parametrize("kwargs, error, message", [
        ({"percentile": 0.0}, ValueError, r"^percentile must be in \(0, 100\], not 0\.0$"),
        ({"percentile": 100.5}, ValueError, r"^percentile must be in \(0, 100\], not 100\.5$"),
        ({"percentile": "99"}, TypeError, r"^percentile must be a number, not '99'$"),
        ({"max_samples": 0}, ValueError, r"^max_samples must be at least 1, not 0$"),
        ({"max_samples": 1.5}, TypeError, r"^max_samples must be an integer, not 1\.5$"),
    ])
    def test_rejects(self, kwargs, error, message):
        with pytest.raises(error, match=message):
            PercentileObserver(**kwargs)


class TestMakeObserver:
    def test_names(self):
        assert set(OBSERVERS) == {"minmax", "percentile"}
        assert isinstance(make_observer("minmax"), MinMaxObserver)
        assert isinstance(make_observer("percentile"), PercentileObserver)
        assert make_observer(lambda: PercentileObserver(99.0)).percentile == 99.0

    def test_rejects(self):
        with pytest.raises(ValueError, match=r"^observer must be one of minmax, percentile, not 'max'$"):
            make_observer("max")
        with pytest.raises(TypeError, match=r"^an observer factory must return an Observer, not int$"):
            make_observer(lambda: 3)
        with pytest.raises(TypeError, match=r"^observer must be a name or an Observer factory, not 3$"):
            make_observer(3)
        assert issubclass(MinMaxObserver, Observer)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


class TestCalibrate:
    def batches(self, n=5):
        g = torch.Generator().manual_seed(1)
        return [(torch.randn(6, 4, generator=g) * (i + 1), torch.zeros(6)) for i in range(n)]

    def test_scales_per_site(self):
        model = tiny_model()
        data = self.batches()
        scales = calibrate(model, data, {"fc1.in": (model[0], "input"), "relu.out": (model[1], "output"),
                                         "fc2.in": (model[2], "input")}, num_batches=2)
        x = torch.cat([b[0] for b in data[:2]])
        with torch.no_grad():
            h = torch.relu(model[0](x))
        assert scales["fc1.in"] == pytest.approx(float(x.abs().max()) / 127, rel=1e-6)
        assert scales["relu.out"] == pytest.approx(float(h.abs().max()) / 127, rel=1e-6)
        assert scales["fc2.in"] == scales["relu.out"]

    def test_uses_only_num_batches(self):
        model = tiny_model()
        data = self.batches()
        one = calibrate(model, data, {"x": (model[0], "input")}, num_batches=1)["x"]
        assert one == pytest.approx(float(data[0][0].abs().max()) / 127, rel=1e-6)

    def test_plain_image_batches_and_mode_restored(self):
        model = tiny_model().train()
        calibrate(model, [torch.ones(2, 4)], {"x": (model[0], "input")})
        assert model.training
        assert not model[0]._forward_hooks  # hooks removed

    def test_percentile_observer(self):
        model = tiny_model()
        x = torch.randn(5000, 4, generator=torch.Generator().manual_seed(0))
        x[0, 0] = 100.0  # one outlier in 20,000 values: above the 99.99th percentile
        data = [x]
        mm = calibrate(model, data, {"x": (model[0], "input")}, observer="minmax")["x"]
        pc = calibrate(model, data, {"x": (model[0], "input")}, observer="percentile")["x"]
        assert mm == 100.0 / 127 and pc < 6.0 / 127

    def test_site_observer_wins(self):
        model = tiny_model()
        x = torch.randn(5000, 4, generator=torch.Generator().manual_seed(0))
        x[0, 0] = 100.0
        sites = {"default": (model[0], "input"), "own": (model[0], "input", "percentile"),
                 "factory": (model[0], "input", lambda: PercentileObserver(99.0))}
        scales = calibrate(model, [x], sites, observer="minmax")
        assert scales["default"] == 100.0 / 127
        assert scales["own"] < 6.0 / 127 and scales["factory"] < scales["own"]
        flipped = calibrate(model, [x], {"default": (model[0], "input"), "own": (model[0], "input", "minmax")},
                            observer="percentile")
        assert flipped["own"] == 100.0 / 127 and flipped["default"] == scales["own"]
        with pytest.raises(ValueError, match=r"^observer must be one of minmax, percentile, not 'mse'$"):
            calibrate(model, [x], {"x": (model[0], "input", "mse")})

    def test_errors(self):
        model = tiny_model()
        other = nn.Linear(2, 2)
        with pytest.raises(ValueError, match=r"^calibration never reached lost; check that these modules run$"):
            calibrate(model, [torch.ones(1, 4)], {"lost": (other, "input")})
        with pytest.raises(ValueError, match=r"^the calibration loader yielded no batches$"):
            calibrate(model, [], {"x": (model[0], "input")})
        with pytest.raises(ValueError, match=r"^num_batches must be at least 1, not 0$"):
            calibrate(model, [torch.ones(1, 4)], {"x": (model[0], "input")}, num_batches=0)
        with pytest.raises(TypeError, match=r"^num_batches must be an integer, not 2\.0$"):
            calibrate(model, [torch.ones(1, 4)], {"x": (model[0], "input")}, num_batches=2.0)
        with pytest.raises(ValueError, match=r"^site 'x' must observe 'input', 'output' or a callable, not 'weight'$"):
            calibrate(model, [torch.ones(1, 4)], {"x": (model[0], "weight")})

    def test_shared_observer_and_callable_sites(self):
        model = tiny_model()
        data = self.batches(1)
        scales = calibrate(model, data, {
            "both": [(model[0], "input"), (model[1], "output")],
            "first_half": (model[0], lambda args, out: out[:, :4]),
        })
        x = data[0][0]
        with torch.no_grad():
            h = model[0](x)
        assert scales["both"] == pytest.approx(max(float(x.abs().max()), float(h.relu().max())) / 127, rel=1e-6)
        assert scales["first_half"] == pytest.approx(float(h[:, :4].abs().max()) / 127, rel=1e-6)
        assert not model[0]._forward_hooks and not model[1]._forward_hooks

    def test_hooks_removed_after_a_bad_site(self):
        model = tiny_model()
        with pytest.raises(ValueError, match=r"^site 'b' must observe 'input', 'output' or a callable, not 3$"):
            calibrate(model, [torch.ones(1, 4)], {"a": (model[0], "input"), "b": (model[2], 3)})
        assert not model[0]._forward_hooks
