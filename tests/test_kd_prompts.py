"""CGKD prompt sets (kd/prompts.py): sources, precedence, K >= 2, comments, class templates."""

import pytest

from stylegan2_ada_kd.kd.prompts import (
    CLASS_TEMPLATES,
    GENERIC_PROMPTS,
    PromptError,
    read_prompts_file,
    resolve_prompts,
)


def _resolve(conditional=False, class_names=None, dataset_prompts=None, prompts_file=None):
    return resolve_prompts(
        conditional=conditional,
        class_names=class_names,
        dataset_prompts=dataset_prompts,
        prompts_file=prompts_file,
    )


def _file(tmp_path, text, name='prompts.txt'):
    path = tmp_path / name
    path.write_text(text, encoding='utf-8')
    return str(path)


def test_generic_prompts_are_the_default():
    assert 12 <= len(GENERIC_PROMPTS) <= 20 and len(set(GENERIC_PROMPTS)) == len(GENERIC_PROMPTS)
    assert all(isinstance(p, str) and p == p.strip() and p for p in GENERIC_PROMPTS)
    assert _resolve() == list(GENERIC_PROMPTS)
    assert _resolve(dataset_prompts=[]) == list(GENERIC_PROMPTS)


def test_conditional_makes_one_prompt_per_class():
    assert _resolve(conditional=True, class_names=['cat', 'golden_retriever', ' dog ']) == [
        'a photo of a cat',
        'a photo of a golden retriever',
        'a photo of a dog',
    ]
    # Class names win over dataset prompts for conditional data.
    assert (
        _resolve(conditional=True, class_names=['cat', 'dog'], dataset_prompts=['x', 'y'])[0]
        == 'a photo of a cat'
    )


@pytest.mark.parametrize('names', [None, []])
def test_conditional_without_class_names_is_refused(names):
    with pytest.raises(PromptError) as err:
        _resolve(conditional=True, class_names=names, dataset_prompts=['a', 'b'])
    text = str(err.value)
    for part in ('class_names', 'dataset.json', 'dataset_tool.py --labels=subfolders', '--kd-prompts=FILE'):
        assert part in text


def test_conditional_with_an_empty_class_name_is_refused():
    with pytest.raises(PromptError, match='indices \\[1\\]'):
        _resolve(conditional=True, class_names=['cat', ' '])


def test_prompts_file_wins_and_ignores_comments_and_blank_lines(tmp_path):
    path = _file(
        tmp_path, '# my prompts\n\na red car\n   # indented comment\n  a blue car  \n\nmodel #5 car\n'
    )
    assert read_prompts_file(path) == ['a red car', 'a blue car', 'model #5 car']
    assert _resolve(prompts_file=path, dataset_prompts=['x', 'y']) == [
        'a red car',
        'a blue car',
        'model #5 car',
    ]
    assert _resolve(conditional=True, class_names=None, prompts_file=path)[0] == 'a red car'
    assert _resolve(conditional=True, class_names=['cat', 'dog'], prompts_file=path)[0] == 'a red car'


def test_dataset_prompts_are_used_when_there_is_no_file():
    assert _resolve(dataset_prompts=['a face', 'a smiling face']) == ['a face', 'a smiling face']


def test_duplicates_are_removed_keeping_order(tmp_path):
    assert _resolve(dataset_prompts=['b', 'a', 'b', ' a ', 'c']) == ['b', 'a', 'c']
    assert _resolve(dataset_prompts=['a  photo', 'a photo\n', 'x']) == ['a photo', 'x']
    path = _file(tmp_path, 'one\ntwo\none\n')
    assert _resolve(prompts_file=path) == ['one', 'two']


def test_fewer_than_two_prompts_is_refused_naming_the_source(tmp_path):
    path = _file(tmp_path, '# only one\na single prompt\n')
    with pytest.raises(PromptError, match='at least 2') as err:
        _resolve(prompts_file=path)
    assert path in str(err.value) and '--kd-prompts' in str(err.value)
    with pytest.raises(PromptError, match='dataset.json prompts gives 1 distinct'):
        _resolve(dataset_prompts=['same', 'same '])
    with pytest.raises(PromptError, match='dataset.json class_names gives 1 distinct'):
        _resolve(conditional=True, class_names=['cat'])
    with pytest.raises(PromptError, match='gives 0 distinct'):
        _resolve(prompts_file=_file(tmp_path, '# nothing\n\n', 'empty.txt'))


def test_missing_prompts_file(tmp_path):
    missing = str(tmp_path / 'missing.txt')
    with pytest.raises(PromptError, match='cannot read') as err:
        _resolve(prompts_file=missing)
    assert missing in str(err.value) and '--kd-prompts' in str(err.value)
    assert issubclass(PromptError, ValueError)


def test_class_template_per_variant():
    names = ['cat', 'golden_retriever']
    assert CLASS_TEMPLATES == {'paper': 'a photo of a {}', 'official': 'a {}'}
    official = resolve_prompts(
        conditional=True,
        class_names=names,
        dataset_prompts=None,
        prompts_file=None,
        class_template=CLASS_TEMPLATES['official'],
    )
    assert official == ['a cat', 'a golden retriever']
    assert _resolve(conditional=True, class_names=names)[0] == 'a photo of a cat'  # paper, the default
