"""The teacher cache: the frozen teacher's outputs for a corpus split, computed once, memory-mapped.

Per distinct English sentence (`src`): the token states of the teacher's chosen layer at every
non-padding position of its encoding ([CLS] at 0, specials included), the sentence embedding (the
teacher's pooling), and each token's character span. `build_teacher_cache` writes it (resumable,
one slice of shards per data-parallel rank); `TeacherCache.open` checks it against the current
teacher, max_length and corpus split, and `TeacherCache.lookup(batch["index"], L_t)` serves it in
the layout of `Teacher.encode`. Run `python -m mmkd.teacher_cache --help` or `mmkd cache-teacher`.
"""

from mmkd.teacher_cache.build import BuildSummary, build_teacher_cache
from mmkd.teacher_cache.reader import TeacherCache

__all__ = ["BuildSummary", "TeacherCache", "build_teacher_cache"]
