"""The least-squares start of the projection heads (mmkd.models.head_fit), with the packaged teacher."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmkd.data.span_matching import match_spans, token_spans
from mmkd.data.tokenization import encode_texts
from mmkd.errors import MMKDError
from mmkd.models.head_fit import fit_projection_heads, ridge_fit
from mmkd.models.heads import create_projection_heads
from mmkd.models.init_student import make_student
from mmkd.models.pooling import mean_pool
from mmkd.models.teacher import load_teacher

ENGLISH = [
    "Open the file.", "Save the document before closing the window.", "The connection to the server was lost.",
    "Do you want to delete this folder?", "Please enter your password.", "The printer is not responding.",
    "Select a language from the list.", "The download finished successfully.", "An unknown error occurred.",
    "Show hidden files.", "Close all tabs.", "The disk is almost full.", "Check for updates automatically.",
    "Your changes have not been saved.", "Search in the current folder.", "The image could not be loaded.",
]
GERMAN = [
    "Datei öffnen.", "Dokument vor dem Schließen des Fensters speichern.", "Die Verbindung zum Server ging verloren.",
    "Möchten Sie diesen Ordner löschen?", "Bitte geben Sie Ihr Passwort ein.", "Der Drucker antwortet nicht.",
    "Wählen Sie eine Sprache aus der Liste.", "Der Download wurde erfolgreich beendet.",
    "Ein unbekannter Fehler ist aufgetreten.", "Versteckte Dateien anzeigen.", "Alle Tabs schließen.",
    "Die Festplatte ist fast voll.", "Automatisch nach Aktualisierungen suchen.",
    "Ihre Änderungen wurden nicht gespeichert.", "Im aktuellen Ordner suchen.", "Das Bild konnte nicht geladen werden.",
]


@pytest.fixture(scope="module")
def teacher():
    return load_teacher()


@pytest.fixture(scope="module")
def fitted():
    return make_student(ENGLISH + GERMAN, vocab_size=400, english=ENGLISH + ENGLISH[:3])


def test_ridge_fit_recovers_a_linear_map():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(300, 8, generator=generator)
    weight = torch.randn(5, 8, generator=generator)
    torch.testing.assert_close(ridge_fit(inputs, inputs @ weight.T, ridge=0.0), weight.double(), rtol=0, atol=1e-6)
    shrunk = ridge_fit(inputs, inputs @ weight.T, ridge=1.0)
    assert shrunk.norm() < 0.9 * weight.norm()


def test_heads_are_the_least_squares_maps_of_the_student_onto_the_teacher(fitted, teacher):
    student, report = fitted
    assert report.head_fit.sentences == len(ENGLISH)  # distinct sentences only
    s_enc = encode_texts(student.tokenizer, ENGLISH, max_length=128)
    t_enc = encode_texts(teacher.tokenizer, ENGLISH, max_length=128)
    with torch.no_grad():
        states = student.hidden_states(s_enc["input_ids"], s_enc["attention_mask"])
        t_out = teacher.encode(t_enc["input_ids"], t_enc["attention_mask"])
    sentences = mean_pool(states, s_enc["attention_mask"])
    weight = ridge_fit(sentences, t_out.sentence_embedding)  # 16 rows < 384 columns: compare the maps' outputs
    with torch.no_grad():
        torch.testing.assert_close(student.heads.sentence(sentences), (sentences.double() @ weight.T).float(),
                                   rtol=1e-3, atol=1e-4)
    matches = match_spans(token_spans(s_enc, 0, student.tokenizer.all_special_ids),
                          token_spans(t_enc, 0, teacher.tokenizer.all_special_ids))
    assert report.head_fit.tokens == matches.shape[0] > len(ENGLISH)
    tokens = states[matches[:, 0], matches[:, 1]]
    weight = ridge_fit(tokens, t_out.token_states[matches[:, 0], matches[:, 2]])
    with torch.no_grad():
        torch.testing.assert_close(student.heads.word(tokens), (tokens.double() @ weight.T).float(),
                                   rtol=1e-3, atol=1e-4)
    random_heads = create_projection_heads(student.d_student, student.d_teacher)
    with torch.no_grad():
        random_cosine = F.cosine_similarity(random_heads.sentence(sentences), t_out.sentence_embedding).mean()
        fitted_cosine = F.cosine_similarity(student.heads.sentence(sentences), t_out.sentence_embedding).mean()
    assert fitted_cosine.item() == pytest.approx(report.head_fit.sentence_cosine, abs=1e-4)
    assert fitted_cosine > 0.9 > random_cosine


def test_without_english_the_heads_stay_seeded_random(fitted):
    student, report = make_student(ENGLISH + GERMAN, vocab_size=400)
    assert report.head_fit is None
    torch.testing.assert_close(student.heads.sentence.weight, create_projection_heads(384, 384).sentence.weight)
    assert not torch.allclose(fitted[0].heads.sentence.weight, student.heads.sentence.weight)


def test_one_sentence_is_refused(fitted, teacher):
    with pytest.raises(MMKDError, match="at least 2 distinct English sentences"):
        fit_projection_heads(fitted[0], teacher, ["Open the file.", "Open the file.", "  "])
