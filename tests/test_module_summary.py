"""The layer table printed at the start of a run (torch_utils.module_summary): rows, order, totals, and no
effect on the run (RNG states and running statistics such as G's w_avg are restored)."""

import copy

import torch
from conftest import TINY_D, TINY_G

from stylegan2_ada_kd.networks import Discriminator, Generator
from torch_utils.module_summary import format_table, summarize


def test_generator_table_lists_layers_parent_first_with_output_shapes():
    G = Generator(**copy.deepcopy(TINY_G)).train()
    rows = summarize(G, [torch.randn(4, 8), torch.zeros(4, 0)])
    names = [r.name for r in rows]
    assert names[:3] == ['mapping', 'mapping.fc0', 'mapping.fc1'] and names[-1] == 'Total'
    assert names.index('synthesis') < names.index('synthesis.b4') < names.index('synthesis.b16')
    by_name = {r.name: r for r in rows}
    assert by_name['mapping'].output == '[4, 6, 8]'  # num_ws = 6 at 16x16
    assert by_name['synthesis.b16'].output == '[4, 8, 16, 16], [4, 3, 16, 16]'  # features and the RGB skip
    total = by_name['Total']
    assert total.params == sum(p.numel() for p in G.parameters()) and total.output == '[4, 3, 16, 16]'
    assert total.buffers == sum(b.numel() for b in G.buffers()) and total.dtype == 'float32'


def test_discriminator_epilogue_sits_before_its_layers():
    """The epilogue block is reached through its own methods, not forward: '-' and placed before b4.*."""
    D = Discriminator(**copy.deepcopy(TINY_D))
    rows = summarize(D, [torch.zeros(4, 3, 16, 16), torch.zeros(4, 0)])
    names = [r.name for r in rows]
    assert names.index('b8.conv1') < names.index('b4') < names.index('b4.mbstd')
    assert rows[names.index('b4')].output == '-' and rows[names.index('b4.mbstd')].output == '[4, 17, 4, 4]'
    assert rows[-1].output == '[4, 1]'
    table = format_table('Discriminator', rows)
    lines = table.splitlines()
    assert lines[0] == 'Discriminator' and lines[1].split() == [
        'Layer',
        'Parameters',
        'Buffers',
        'Output',
        'shape',
        'Dtype',
    ]
    assert lines[-1].startswith('Total') and f'{rows[-1].params:,}' in lines[-1]
    assert all(line == line.rstrip() for line in lines)


def test_the_table_leaves_the_run_untouched():
    G = Generator(**copy.deepcopy(TINY_G)).train()
    G.mapping.w_avg.fill_(0.5)
    before = copy.deepcopy(G.state_dict())
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    summarize(G, [torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), torch.zeros(4, 0)])
    assert torch.equal(torch.rand(3), expected)  # noise inputs drew from a forked RNG
    for key, value in G.state_dict().items():
        assert torch.equal(value, before[key]), key  # w_avg not moved by the training-mode forward
