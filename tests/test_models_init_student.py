"""init-student on a tiny hand-written corpus: 30 software messages in English and their translations
into French, German, Spanish (Latin with accents), Russian (Cyrillic), Arabic and Chinese (CJK)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

from mmkd.errors import MMKDError
from mmkd.models.heads import create_projection_heads
from mmkd.models.init_student import corpus_training_texts, init_student, initial_word_embeddings, make_student
from mmkd.models.student import STUDENT_FILE, load_student
from mmkd.models.teacher import PACKAGED_TEACHER_SHA256

ENGLISH = [
    "Open the file.",
    "Save the document before closing the window.",
    "The connection to the server was lost.",
    "Do you want to delete this folder?",
    "Please enter your password.",
    "The printer is not responding.",
    "Select a language from the list.",
    "The download finished successfully.",
    "An unknown error occurred.",
    "Show hidden files.",
    "Close all tabs.",
    "The disk is almost full.",
    "Check for updates automatically.",
    "Your changes have not been saved.",
    "Search in the current folder.",
    "The image could not be loaded.",
    "Restart the computer now.",
    "Add a new user account.",
    "The network is unavailable.",
    "Copy the selected text.",
    "Move the file to the trash.",
    "The battery is low.",
    "Print the current page.",
    "Change the keyboard layout.",
    "The password is too short.",
    "Remove the device safely.",
    "Open a new window.",
    "Set the time and date.",
    "The music is playing.",
    "Send the message to all contacts.",
]

FRENCH = [
    "Ouvrez le fichier.",
    "Enregistrez le document avant de fermer la fenêtre.",
    "La connexion au serveur a été perdue.",
    "Voulez-vous supprimer ce dossier ?",
    "Veuillez saisir votre mot de passe.",
    "L'imprimante ne répond pas.",
    "Sélectionnez une langue dans la liste.",
    "Le téléchargement s'est terminé avec succès.",
    "Une erreur inconnue s'est produite.",
    "Afficher les fichiers cachés.",
    "Fermer tous les onglets.",
    "Le disque est presque plein.",
    "Vérifier automatiquement les mises à jour.",
    "Vos modifications n'ont pas été enregistrées.",
    "Rechercher dans le dossier actuel.",
    "L'image n'a pas pu être chargée.",
    "Redémarrer l'ordinateur maintenant.",
    "Ajouter un nouveau compte utilisateur.",
    "Le réseau est indisponible.",
    "Copier le texte sélectionné.",
    "Déplacer le fichier dans la corbeille.",
    "La batterie est faible.",
    "Imprimer la page actuelle.",
    "Changer la disposition du clavier.",
    "Le mot de passe est trop court.",
    "Retirer le périphérique en toute sécurité.",
    "Ouvrir une nouvelle fenêtre.",
    "Régler l'heure et la date.",
    "La musique est en cours de lecture.",
    "Envoyer le message à tous les contacts.",
]

GERMAN = [
    "Öffnen Sie die Datei.",
    "Speichern Sie das Dokument, bevor Sie das Fenster schließen.",
    "Die Verbindung zum Server wurde unterbrochen.",
    "Möchten Sie diesen Ordner löschen?",
    "Bitte geben Sie Ihr Passwort ein.",
    "Der Drucker antwortet nicht.",
    "Wählen Sie eine Sprache aus der Liste.",
    "Der Download wurde erfolgreich abgeschlossen.",
    "Ein unbekannter Fehler ist aufgetreten.",
    "Versteckte Dateien anzeigen.",
    "Alle Reiter schließen.",
    "Die Festplatte ist fast voll.",
    "Automatisch nach Aktualisierungen suchen.",
    "Ihre Änderungen wurden nicht gespeichert.",
    "Im aktuellen Ordner suchen.",
    "Das Bild konnte nicht geladen werden.",
    "Den Computer jetzt neu starten.",
    "Ein neues Benutzerkonto hinzufügen.",
    "Das Netzwerk ist nicht verfügbar.",
    "Den ausgewählten Text kopieren.",
    "Die Datei in den Papierkorb verschieben.",
    "Der Akku ist fast leer.",
    "Die aktuelle Seite drucken.",
    "Die Tastaturbelegung ändern.",
    "Das Passwort ist zu kurz.",
    "Das Gerät sicher entfernen.",
    "Ein neues Fenster öffnen.",
    "Uhrzeit und Datum einstellen.",
    "Die Musik wird abgespielt.",
    "Die Nachricht an alle Kontakte senden.",
]

SPANISH = [
    "Abra el archivo.",
    "Guarde el documento antes de cerrar la ventana.",
    "Se perdió la conexión con el servidor.",
    "¿Quiere eliminar esta carpeta?",
    "Por favor, introduzca su contraseña.",
    "La impresora no responde.",
    "Seleccione un idioma de la lista.",
    "La descarga terminó correctamente.",
    "Ocurrió un error desconocido.",
    "Mostrar los archivos ocultos.",
    "Cerrar todas las pestañas.",
    "El disco está casi lleno.",
    "Buscar actualizaciones automáticamente.",
    "Sus cambios no se han guardado.",
    "Buscar en la carpeta actual.",
    "No se pudo cargar la imagen.",
    "Reiniciar el ordenador ahora.",
    "Añadir una cuenta de usuario nueva.",
    "La red no está disponible.",
    "Copiar el texto seleccionado.",
    "Mover el archivo a la papelera.",
    "La batería está baja.",
    "Imprimir la página actual.",
    "Cambiar la distribución del teclado.",
    "La contraseña es demasiado corta.",
    "Quitar el dispositivo de forma segura.",
    "Abrir una ventana nueva.",
    "Ajustar la fecha y la hora.",
    "La música se está reproduciendo.",
    "Enviar el mensaje a todos los contactos.",
]

RUSSIAN = [
    "Откройте файл.",
    "Сохраните документ перед закрытием окна.",
    "Соединение с сервером потеряно.",
    "Вы хотите удалить эту папку?",
    "Пожалуйста, введите пароль.",
    "Принтер не отвечает.",
    "Выберите язык из списка.",
    "Загрузка успешно завершена.",
    "Произошла неизвестная ошибка.",
    "Показать скрытые файлы.",
    "Закрыть все вкладки.",
    "Диск почти заполнен.",
    "Автоматически проверять обновления.",
    "Ваши изменения не были сохранены.",
    "Искать в текущей папке.",
    "Не удалось загрузить изображение.",
    "Перезагрузить компьютер сейчас.",
    "Добавить новую учётную запись.",
    "Сеть недоступна.",
    "Копировать выделенный текст.",
    "Переместить файл в корзину.",
    "Низкий заряд батареи.",
    "Печатать текущую страницу.",
    "Изменить раскладку клавиатуры.",
    "Пароль слишком короткий.",
    "Безопасно извлечь устройство.",
    "Открыть новое окно.",
    "Установить время и дату.",
    "Играет музыка.",
    "Отправить сообщение всем контактам.",
]

ARABIC = [
    "افتح الملف.",
    "احفظ المستند قبل إغلاق النافذة.",
    "فُقد الاتصال بالخادم.",
    "هل تريد حذف هذا المجلد؟",
    "الرجاء إدخال كلمة المرور.",
    "الطابعة لا تستجيب.",
    "اختر لغة من القائمة.",
    "اكتمل التنزيل بنجاح.",
    "حدث خطأ غير معروف.",
    "إظهار الملفات المخفية.",
    "إغلاق كل الألسنة.",
    "القرص ممتلئ تقريبًا.",
    "التحقق من التحديثات تلقائيًا.",
    "لم يتم حفظ تغييراتك.",
    "البحث في المجلد الحالي.",
    "تعذر تحميل الصورة.",
    "أعد تشغيل الحاسوب الآن.",
    "إضافة حساب مستخدم جديد.",
    "الشبكة غير متاحة.",
    "نسخ النص المحدد.",
    "نقل الملف إلى سلة المهملات.",
    "البطارية منخفضة.",
    "طباعة الصفحة الحالية.",
    "تغيير تخطيط لوحة المفاتيح.",
    "كلمة المرور قصيرة جدًا.",
    "إزالة الجهاز بأمان.",
    "فتح نافذة جديدة.",
    "ضبط الوقت والتاريخ.",
    "الموسيقى قيد التشغيل.",
    "إرسال الرسالة إلى كل جهات الاتصال.",
]

CHINESE = [
    "打开文件。",
    "关闭窗口前请保存文档。",
    "与服务器的连接已断开。",
    "您要删除此文件夹吗？",
    "请输入您的密码。",
    "打印机没有响应。",
    "从列表中选择一种语言。",
    "下载已成功完成。",
    "发生未知错误。",
    "显示隐藏文件。",
    "关闭所有标签页。",
    "磁盘快满了。",
    "自动检查更新。",
    "您的更改尚未保存。",
    "在当前文件夹中搜索。",
    "无法加载图像。",
    "立即重新启动计算机。",
    "添加新用户帐户。",
    "网络不可用。",
    "复制所选文本。",
    "将文件移到回收站。",
    "电池电量低。",
    "打印当前页面。",
    "更改键盘布局。",
    "密码太短。",
    "安全地移除设备。",
    "打开新窗口。",
    "设置时间和日期。",
    "正在播放音乐。",
    "将消息发送给所有联系人。",
]

TRANSLATIONS = {"fr": FRENCH, "de": GERMAN, "es": SPANISH, "ru": RUSSIAN, "ar": ARABIC, "zh_CN": CHINESE}
SENTENCES = ENGLISH + [line for lines in TRANSLATIONS.values() for line in lines]
VOCAB_SIZE = 1200
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@pytest.fixture(scope="module")
def made():
    return make_student(SENTENCES, vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="module")
def student(made):
    return made[0]


@pytest.fixture(scope="module")
def source(teacher_dir):
    """The default source (the teacher): its encoder and tokenizer."""
    return AutoModel.from_pretrained(teacher_dir), AutoTokenizer.from_pretrained(teacher_dir)


def word_row(model, token_id: int) -> torch.Tensor:
    return model.embeddings.word_embeddings.weight[token_id]


def test_tokenizer_round_trips_text(student):
    tokenizer = student.tokenizer
    assert len(tokenizer) == VOCAB_SIZE
    for text in SENTENCES:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        # decode puts a space between words, punctuation marks and CJK characters: compare without spaces
        assert "".join(decoded.split()) == "".join(text.lower().split()), text


def test_offsets_map_tokens_back_into_text(student):
    tokenizer = student.tokenizer
    for text in SENTENCES:
        encoding = tokenizer(text, return_offsets_mapping=True)
        tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        for token, (start, end) in zip(tokens[1:-1], encoding["offset_mapping"][1:-1]):
            assert text[start:end].lower() == token.removeprefix("##"), (text, token)


def test_accents_kept_and_cjk_split(student):
    tokenizer = student.tokenizer
    assert tokenizer.tokenize("打开文件。") == ["打", "开", "文", "件", "。"]
    assert "".join(tokenizer.tokenize("Fenêtre")).replace("##", "") == "fenêtre"
    assert tokenizer.tokenize("fenetre") != tokenizer.tokenize("fenêtre")


def test_tokens_known_to_the_source_copy_its_rows(student, source):
    model, source_tokenizer = source
    vocab, source_vocab = student.tokenizer.get_vocab(), source_tokenizer.get_vocab()
    for token in ("the", "open", "##s", "file", *SPECIALS):
        assert token in vocab and token in source_vocab, token
        torch.testing.assert_close(word_row(student.mlm.bert, vocab[token]), word_row(model, source_vocab[token]),
                                   rtol=0, atol=0)


def test_other_tokens_average_the_source_pieces_of_their_text(student, source):
    model, source_tokenizer = source
    vocab = student.tokenizer.get_vocab()
    # "é" is in the uncased source vocabulary but its normaliser never produces it (accents stripped)
    candidates = ["é", "fenêtre", "пароль", "كلمة", "passwort", "contraseña", "##eñ", "##añ"]
    checked = 0
    for token in candidates:
        if token not in vocab:
            continue
        pieces = source_tokenizer(token.removeprefix("##"), add_special_tokens=False)["input_ids"]
        pieces = [piece for piece in pieces if piece != source_tokenizer.unk_token_id]
        assert pieces, token
        expected = torch.stack([word_row(model, piece) for piece in pieces]).mean(dim=0)
        torch.testing.assert_close(word_row(student.mlm.bert, vocab[token]), expected)
        checked += 1
    assert checked >= 5
    assert len(source_tokenizer.tokenize("fenêtre")) > 1


def test_tokens_the_source_cannot_split_get_its_unknown_row(made, source):
    student, report = made
    model, source_tokenizer = source
    assert source_tokenizer.tokenize("磁") == ["[UNK]"]
    row = word_row(student.mlm.bert, student.tokenizer.convert_tokens_to_ids("磁"))
    torch.testing.assert_close(row, word_row(model, source_tokenizer.unk_token_id), rtol=0, atol=0)
    counts = report.embeddings
    assert min(counts.copied, counts.averaged, counts.unknown) > 0
    assert counts.copied + counts.averaged + counts.unknown == VOCAB_SIZE


def test_encoder_copied_from_source_and_decoder_tied(made, source):
    student, report = made
    model, _ = source
    copied = {key: value for key, value in student.mlm.bert.state_dict().items()
              if key != "embeddings.word_embeddings.weight"}
    source_state = model.state_dict()
    assert copied and all(torch.equal(value, source_state[key]) for key, value in copied.items())
    decoder = student.mlm.cls.predictions.decoder
    assert decoder.weight.data_ptr() == student.mlm.bert.embeddings.word_embeddings.weight.data_ptr()
    assert torch.equal(student.mlm.cls.predictions.bias, torch.zeros(VOCAB_SIZE))
    assert not report.transform_from_source
    assert (report.d_student, report.d_teacher) == (384, 384)
    torch.testing.assert_close(student.heads.word.weight, create_projection_heads(384, 384, seed=0).word.weight)


def test_saved_student_loads_with_transformers_and_load_student(student, tmp_path):
    out = tmp_path / "student"
    student.save(out)
    batch = student.tokenizer(SENTENCES[::10], padding=True, return_tensors="pt")
    student.eval()
    expected = student.hidden_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert [tokenizer(text)["input_ids"] for text in SENTENCES] == [
        student.tokenizer(text)["input_ids"] for text in SENTENCES]
    mlm = AutoModelForMaskedLM.from_pretrained(out)
    assert isinstance(mlm, BertForMaskedLM)
    with torch.no_grad():
        torch.testing.assert_close(mlm.bert(**batch).last_hidden_state, expected)
    reloaded = load_student(str(out))
    torch.testing.assert_close(
        reloaded.hidden_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]), expected)
    torch.testing.assert_close(reloaded.heads.sentence.weight, student.heads.sentence.weight)
    description = json.loads((out / STUDENT_FILE).read_text())
    assert description["d_student"] == description["d_teacher"] == 384
    assert description["source"]["weights_sha256"] == PACKAGED_TEACHER_SHA256


def test_source_with_an_mlm_head_lends_its_transform(tmp_path, teacher_tokenizer):
    config = BertConfig(vocab_size=len(teacher_tokenizer), hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    source_mlm = BertForMaskedLM(config)
    source_mlm.save_pretrained(tmp_path / "source")
    teacher_tokenizer.save_pretrained(tmp_path / "source")
    student, report = make_student(ENGLISH + FRENCH, source=str(tmp_path / "source"), vocab_size=300, seed=5)
    assert report.transform_from_source
    for key, value in source_mlm.cls.predictions.transform.state_dict().items():
        assert torch.equal(student.mlm.cls.predictions.transform.state_dict()[key], value), key
    assert (report.d_student, report.d_teacher) == (16, 384)
    assert student.source["name"] == str(tmp_path / "source")
    assert student.mlm.config.max_position_embeddings == 64 == student.tokenizer.model_max_length


def test_source_of_another_family_is_refused_with_the_keep_vocab_hint(tmp_path):
    (tmp_path / "distilbert").mkdir()
    (tmp_path / "distilbert" / "config.json").write_text(json.dumps({"model_type": "distilbert"}))
    with pytest.raises(MMKDError, match="'distilbert'.*--keep-vocab"):
        make_student(ENGLISH, source=str(tmp_path / "distilbert"))


def test_existing_output_is_not_overwritten(tmp_path):
    (tmp_path / "keep.txt").write_text("trained student")
    with pytest.raises(MMKDError, match=str(tmp_path)):
        init_student(ENGLISH, tmp_path)


def corpus_rows(first: int, last: int) -> list[dict]:
    return [{"src": ENGLISH[i], "tgt": lines[i], "lang": lang, "alignment": None}
            for lang, lines in TRANSLATIONS.items() for i in range(first, last)]


def test_training_texts_are_the_distinct_train_strings():
    from mmkd.corpus.schema import make_corpus

    corpus = make_corpus({"train": corpus_rows(0, 24), "dev": corpus_rows(24, 27), "test": corpus_rows(27, 30)})
    texts = corpus_training_texts(corpus)
    expected = set(ENGLISH[:24]) | {lines[i] for lines in TRANSLATIONS.values() for i in range(24)}
    assert len(texts) == len(expected) and set(texts) == expected


def test_command_writes_a_loadable_student(tmp_path, capsys):
    from mmkd.cli import build_parser
    from mmkd.corpus.schema import make_corpus, save_corpus

    corpus = make_corpus({"train": corpus_rows(0, 24), "dev": corpus_rows(24, 27), "test": corpus_rows(27, 30)})
    save_corpus(corpus, {}, tmp_path / "corpus")
    args = build_parser(["init-student"]).parse_args(["init-student", "--corpus", str(tmp_path / "corpus"), "--out",
                              str(tmp_path / "student"), "--vocab-size", "700"])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "projection head fit: 100%" in captured.err  # its progress bar
    assert "copied from the source" in printed and "averaged" in printed
    assert f"word embeddings fitted on {24 * len(TRANSLATIONS)} parallel pairs" in printed  # the default
    assert "projection heads: P_w 384 -> 384, P_s 384 -> 384, fitted on 24 English sentences" in printed
    for lang in TRANSLATIONS:
        assert f"unknown-token rate on dev, {lang}:" in printed
    student = load_student(str(tmp_path / "student"))
    assert len(student.tokenizer) == 700 and student.d_teacher == 384


def test_translated_words_move_towards_their_english_source(source):
    """On the tiny corpus, a translation's mean input embedding after the parallel fit is nearer its
    English sentence's (teacher rows, copied) than with the sub-token means; copied rows are unchanged."""
    translations = [line for lines in TRANSLATIONS.values() for line in lines]
    student, report = make_student(SENTENCES, vocab_size=VOCAB_SIZE, english=ENGLISH * len(TRANSLATIONS),
                                   translations=translations)
    fit = report.parallel_fit
    assert fit is not None and fit.pairs == len(translations) and report.embeddings.parallel == fit.fitted > 0
    assert fit.relative_residual <= 1e-4 and fit.mse_after < 0.5 * fit.mse_before
    source_model, source_tokenizer = source
    rows_before, copied, _ = initial_word_embeddings(student.tokenizer, source_tokenizer,
                                                     word_row(source_model, slice(None)).detach())
    rows_after = student.mlm.bert.embeddings.word_embeddings.weight.detach()
    changed = (rows_before != rows_after).any(1)
    assert int(changed.sum()) == fit.fitted and not changed[copied].any()

    def mean_row(rows, text):
        return rows[student.tokenizer(text, add_special_tokens=False)["input_ids"]].mean(0)

    def cosine_to_english(rows):
        return torch.stack([torch.cosine_similarity(mean_row(rows, fr), mean_row(rows_before, en), dim=0)
                            for en, fr in zip(ENGLISH, FRENCH)]).mean()

    assert cosine_to_english(rows_after) > cosine_to_english(rows_before) + 0.1


def test_translations_need_a_new_vocabulary_and_one_per_sentence():
    with pytest.raises(MMKDError, match="one translation per English sentence"):
        make_student(SENTENCES, vocab_size=VOCAB_SIZE, english=ENGLISH, translations=FRENCH[:3])
