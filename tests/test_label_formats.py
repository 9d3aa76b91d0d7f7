"""The public datasets' own label files, each written in its published form, recognised from the file alone."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image

import features.data.dataset as dataset_module
from features.data.formats import FORMATS, padchest_labels, recognise
from features.data.labels import LabelsError, read_labels
from features.data.records import Label
from features.settings import LABELS_FORMATS, LabelSettings


def write(path: Path, text: str) -> Path:
    """A file holding ``text`` exactly as given (header, quoting and line ends as the dataset writes them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def images(root: Path, paths: list[str]) -> None:
    """A tiny image at each path below ``root``."""
    rng = np.random.default_rng(0)
    for one in paths:
        write_image(root / one, "normal", rng, size=8)


def placeholders(root: Path, paths: list[str], monkeypatch) -> None:
    """Empty files for DICOM paths (.dcm, .dicom), taken as images here: these tests read the label files only."""
    monkeypatch.setattr(dataset_module, "IMAGE_SUFFIXES", (*dataset_module.IMAGE_SUFFIXES, ".dcm", ".dicom"))
    for one in paths:
        (root / one).parent.mkdir(parents=True, exist_ok=True)
        (root / one).write_bytes(b"")


def by_path(dataset) -> dict:
    return {record.path: record for record in dataset.records}


# --- NIH ChestX-ray14 -------------------------------------------------------------------------------------------

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")  # fmt: skip
NIH_ROWS = ["00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143",
            "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143",
            "00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171",
            "00000003_000.png,Hernia,0,3,81,F,PA,2582,2991,0.143,0.143",
            "00000004_000.png,Mass|Nodule,0,4,82,M,AP,2500,2048,0.168,0.168"]  # fmt: skip


@pytest.mark.parametrize("trailing", [",", ""], ids=["Data_Entry_2017", "Data_Entry_2017_v2020"])
def test_nih_is_recognised_with_its_split_lists_and_attributes(tmp_path: Path, capsys, trailing: str):
    # The 2017 file ends its header and every row in a comma (an extra empty column); the v2020 file does not.
    name = "Data_Entry_2017.csv" if trailing else "Data_Entry_2017_v2020.csv"
    labels = write(tmp_path / name, "\n".join(line + trailing for line in [NIH_HEADER, *NIH_ROWS]) + "\n")
    write(tmp_path / "train_val_list.txt", "00000001_000.png\n00000001_001.png\n00000002_000.png\n")
    write(tmp_path / "test_list.txt", "00000003_000.png\n00000004_000.png\n")
    images(tmp_path / "images", [f"images_00{i}/images/{row.split(',')[0]}" for i, row in enumerate(NIH_ROWS)])
    dataset = read_labels(tmp_path / "images", LabelSettings(labels=str(labels)))
    assert capsys.readouterr().out.strip() == f"labels format: NIH ChestX-ray14 ({name}, recognised from its header)"
    assert dataset.multi_label and dataset.classes == ("Cardiomegaly", "Emphysema", "Hernia", "Mass", "Nodule")
    records = {Path(path).name: record for path, record in by_path(dataset).items()}
    first, normal, mass = records["00000001_001.png"], records["00000002_000.png"], records["00000004_000.png"]
    assert first.label == Label.of_findings(["Cardiomegaly", "Emphysema"]) and normal.label == Label.of_findings()
    assert (first.split, mass.split, first.patient, records["00000001_000.png"].patient) == ("train", "test", "1", "1")
    assert (mass.attribute("sex"), mass.attribute("age"), mass.attribute("view")) == ("M", "82", "AP")
    assert records["00000003_000.png"].attribute("sex") == "F" and not dataset.skipped
    assert any("train from train_val_list.txt" in note for note in dataset.notes)


def test_nih_without_its_split_lists_carves_and_says_so(tmp_path: Path):
    labels = write(tmp_path / "Data_Entry_2017.csv", "\n".join(line + "," for line in [NIH_HEADER, *NIH_ROWS]))
    images(tmp_path, [row.split(",")[0] for row in NIH_ROWS])
    dataset = read_labels(tmp_path, LabelSettings(labels=str(labels)))
    assert {record.split for record in dataset.records} == {"train"}
    assert any("carved by patient" in note for note in dataset.notes)


def test_given_options_win_over_the_preset(tmp_path: Path, capsys):
    labels = write(tmp_path / "Data_Entry_2017.csv", "\n".join(line + "," for line in [NIH_HEADER, *NIH_ROWS]))
    images(tmp_path, [row.split(",")[0] for row in NIH_ROWS])
    # A patient pattern given: the preset's patient column (same group) is not applied; the view column given wins.
    settings = LabelSettings(labels=str(labels), patient_pattern=r"^(\d+)_", view_column="Patient Gender",
                             classes=("Cardiomegaly", "Hernia"))  # fmt: skip
    dataset = read_labels(tmp_path, settings)
    record = by_path(dataset)["00000003_000.png"]
    assert record.patient == "00000003" and record.attribute("view") == "F"
    assert dataset.classes == ("Cardiomegaly", "Hernia") and by_path(dataset).keys() == {
        "00000001_000.png", "00000002_000.png", "00000003_000.png"}
    assert "the given --patient-pattern, --view-column kept over its preset" in capsys.readouterr().out


# --- CheXpert ---------------------------------------------------------------------------------------------------

CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                   "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
                   "Pleural Effusion,Pleural Other,Fracture,Support Devices")  # fmt: skip
CHEXPERT_TRAIN = [
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
    "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,"
    "-1.0,,-1.0,,1.0,",
    "CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,,,,1.0,,,-1.0,,,,,,1.0,",
    "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,41,Frontal,PA,,,,,,1.0,,,,0.0,,,,",
]
CHEXPERT_VALID = [
    "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,0.0,0.0,"
    "0.0,0.0,0.0,0.0,0.0,0.0,0.0",
    "CheXpert-v1.0-small/valid/patient64542/study1/view2_lateral.jpg,Male,70,Lateral,,0.0,0.0,0.0,0.0,0.0,0.0,0.0,"
    "0.0,0.0,0.0,0.0,0.0,0.0,1.0",
]


def make_chexpert(base: Path, valid: bool = True) -> Path:
    """CheXpert-v1.0-small/ with train.csv (and valid.csv) and the images they name; returns that folder."""
    folder = base / "CheXpert-v1.0-small"
    write(folder / "train.csv", "\n".join([CHEXPERT_HEADER, *CHEXPERT_TRAIN]) + "\n")
    rows = CHEXPERT_TRAIN + (CHEXPERT_VALID if valid else [])
    if valid:
        write(folder / "valid.csv", "\n".join([CHEXPERT_HEADER, *CHEXPERT_VALID]) + "\n")
    images(base, [row.split(",")[0] for row in rows])
    return folder


@pytest.mark.parametrize("data", ["folder itself", "its parent"])
def test_chexpert_train_and_valid_are_read_with_views_patients_and_uncertainty(tmp_path: Path, data: str):
    folder = make_chexpert(tmp_path)
    root = folder if data == "folder itself" else tmp_path
    dataset = read_labels(root, LabelSettings(labels=str(folder / "train.csv")))
    records = {path.split("small/")[-1]: record for path, record in by_path(dataset).items()}
    assert len(records) == 6 and not dataset.skipped and "No Finding" not in dataset.classes
    first, uncertain = records["train/patient00001/study1/view1_frontal.jpg"], records[
        "train/patient00002/study2/view1_frontal.jpg"]
    assert first.label == Label.of_findings(["Support Devices"]) and first.patient == "00001"
    assert "Cardiomegaly" in uncertain.label.unknown and "Lung Opacity" in uncertain.label.findings
    lateral = records["train/patient00002/study1/view2_lateral.jpg"]
    assert (lateral.attribute("view"), first.attribute("view"), records[
        "train/patient00003/study1/view1_frontal.jpg"].attribute("view")) == ("LATERAL", "AP", "PA")
    assert (first.attribute("sex"), first.attribute("age")) == ("F", "68")
    assert {r.split for k, r in records.items() if k.startswith("valid/")} == {"val"}
    assert {r.split for k, r in records.items() if k.startswith("train/")} == {"train"}


def test_chexpert_valid_alone_is_carved_and_uncertainty_policy_is_kept(tmp_path: Path):
    folder = make_chexpert(tmp_path)
    settings = LabelSettings(labels=str(folder / "valid.csv"), uncertain="ones")
    dataset = read_labels(tmp_path, settings)
    assert {record.split for record in dataset.records} == {"train"} and len(dataset.records) == 2
    assert any("valid.csv alone" in note for note in dataset.notes)
    uncertain = read_labels(tmp_path, LabelSettings(labels=str(folder / "train.csv"), uncertain="ones"))
    record = by_path(uncertain)["CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg"]
    assert "Cardiomegaly" in record.label.findings and not record.label.unknown


# --- MIMIC-CXR-JPG ----------------------------------------------------------------------------------------------

MIMIC_LABELS = """subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,\
Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices
10000032,50414267,,,,,,,,,1.0,,,,,
10000032,53189527,,,,,,,,,1.0,,,,,
10000764,57375967,,,1.0,,,,,,,,,-1.0,,
"""
MIMIC_METADATA = """dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,\
StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,\
PatientOrientationCodeSequence_CodeMeaning
02aa804e-bde0afdd-112c0b34-7bc16630-4e384014,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544,21800506,\
213014.531,CHEST (PA AND LAT),postero-anterior,Erect
174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962,10000032,50414267,CHEST (PA AND LAT),LATERAL,3056,2544,21800506,\
213014.531,CHEST (PA AND LAT),lateral,Erect
2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab,10000032,53189527,CHEST (PA AND LAT),PA,3056,2544,21800626,\
165500.312,CHEST (PA AND LAT),postero-anterior,Erect
096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4,10000764,57375967,CHEST (PORTABLE AP),AP,2705,2539,21321027,\
175524.296,CHEST (PORTABLE AP),antero-posterior,
fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818,10000898,50771383,CHEST (PA AND LAT),PA,3056,2544,21190110,\
101200.000,CHEST (PA AND LAT),postero-anterior,Erect
"""
MIMIC_SPLIT = """dicom_id,study_id,subject_id,split
02aa804e-bde0afdd-112c0b34-7bc16630-4e384014,50414267,10000032,train
174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962,50414267,10000032,train
2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab,53189527,10000032,train
096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4,57375967,10000764,validate
fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818,50771383,10000898,test
"""


def mimic_path(line: str) -> str:
    dicom, subject, study = line.split(",")[:3]
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def test_mimic_joins_labels_metadata_and_split_gzipped_or_not(tmp_path: Path):
    labels = write(tmp_path / "mimic-cxr-2.0.0-chexpert.csv", MIMIC_LABELS)
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz").write_bytes(gzip.compress(MIMIC_METADATA.encode()))
    write(tmp_path / "mimic-cxr-2.0.0-split.csv", MIMIC_SPLIT)
    images(tmp_path, [mimic_path(line) for line in MIMIC_METADATA.splitlines()[1:]])
    dataset = read_labels(tmp_path, LabelSettings(labels=str(labels)))
    records = by_path(dataset)
    assert len(records) == 4 and dataset.multi_label and "No Finding" not in dataset.classes
    ap = records["files/p10/p10000764/s57375967/096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4.jpg"]
    assert (ap.split, ap.patient, ap.attribute("view")) == ("val", "10000764", "AP")
    assert ap.label == Label.of_findings(["Consolidation"], ["Pneumonia"])
    lateral = records["files/p10/p10000032/s50414267/174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962.jpg"]
    assert (lateral.split, lateral.attribute("view"), lateral.label) == ("train", "LATERAL", Label.of_findings())
    [unlabelled] = dataset.skipped  # its study has no row in the labels file
    assert "p10000898" in unlabelled.path and unlabelled.kind == "study without labels in mimic-cxr-2.0.0-chexpert.csv"
    assert unlabelled.reason == "study s50771383 of subject p10000898 has no row in mimic-cxr-2.0.0-chexpert.csv"


def test_mimic_needs_its_metadata_and_carves_without_its_split(tmp_path: Path):
    labels = write(tmp_path / "mimic-cxr-2.0.0-chexpert.csv", MIMIC_LABELS)
    with pytest.raises(LabelsError, match="mimic-cxr-2.0.0-metadata.csv\\(.gz\\) is not beside") as error:
        read_labels(tmp_path, LabelSettings(labels=str(labels)))
    assert "\n" not in str(error.value)
    write(tmp_path / "mimic-cxr-2.0.0-metadata.csv", MIMIC_METADATA)
    images(tmp_path, [mimic_path(line) for line in MIMIC_METADATA.splitlines()[1:]])
    dataset = read_labels(tmp_path, LabelSettings(labels=str(labels)))
    assert {record.split for record in dataset.records} == {"train"}
    assert any("no mimic-cxr-2.0.0-split.csv beside it" in note for note in dataset.notes)


# --- PadChest ---------------------------------------------------------------------------------------------------

PADCHEST_HEADER = (",ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,PatientSex_DICOM,"
                   "ViewPosition_DICOM,Projection,MethodProjection,Pediatric,Modality_DICOM,ReportID,Report,"
                   "MethodLabel,Labels,Localizations,LabelsLocalizationsBySentence,labelCUIS,LocalizationsCUIS")
PADCHEST_ROWS = [
    '0,20536686640136348236148679891455886468_k6ga29.png,0,20140915,20536686640136348236148679891455886468,'
    '839860488694292331637988235681460987,1930.0,F,POSTEROANTERIOR,PA,Manual review of DICOM fields,No,CR,4765777,'
    '"sin hallazgos patologicos significativos ",Physician,"[\'normal\']","[]","[[\'normal\']]","[]","[]"',
    '1,135803415504923515076821959678074435083_fzis7b.png,0,20150914,313572750430997347502932654319389875966,'
    '313572750430997347502932654319389875966,1927.0,M,POSTEROANTERIOR,L,Manual review of DICOM fields,No,CR,4991845,'
    '"cifosis dorsal . ",Physician,"[\'pneumonia\', \' infiltrates\']","[\'loc left\']",'
    '"[[\'pneumonia\', \'loc left\'], [\'infiltrates\']]","[\'C0032285\', \'C0277877\']","[\'C0443246\']"',
    '2,113855343774216031107737439268243531979_3k951l.png,1,20121012,50783093527901818115346441867348318648,'
    '50783093527901818115346441867348318648,1933.0,M,ANTEROPOSTERIOR,AP_horizontal,Manual review of DICOM fields,'
    'No,CR,4352323,"",Physician,"[\'\']","[]","[[\'\']]","[]","[]"',
    '3,216840111366964013534861372972012342130058227_00-141-160.png,1,20120812,2168401113669640135348613729720123,'
    '216840111366964013534861372972012,,M,,UNK,Manual review of DICOM fields,No,CR,4334334,"",Physician,,,,,',
    '4,216840111366964012819207061112010306085429121_04-020-102.png,1,20101102,2168401113669640128192070611120,'
    '216840111366964012819207061112010,1950.0,F,,PA,Manual review of DICOM fields,No,CR,4115000,"",Physician,'
    '"[\'cardiomegaly\'","[]","[]","[]","[]"',
]


def test_padchest_lists_quirks_age_and_views(tmp_path: Path):
    labels = write(tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
                   "\n".join([PADCHEST_HEADER, *PADCHEST_ROWS]) + "\n")  # fmt: skip
    paths = [f"{row.split(',')[2]}/{row.split(',')[1]}" for row in PADCHEST_ROWS]
    images(tmp_path, paths)
    dataset = read_labels(tmp_path, LabelSettings(labels=str(labels)))
    records = by_path(dataset)
    assert records.keys() == set(paths[:2]) and dataset.classes == ("infiltrates", "pneumonia")
    normal, sick = records[paths[0]], records[paths[1]]
    assert normal.label == Label.of_findings() and sick.label == Label.of_findings(["infiltrates", "pneumonia"])
    assert (normal.attribute("age"), normal.attribute("sex"), normal.attribute("view")) == ("84", "F", "PA")
    assert sick.attribute("view") == "LATERAL" and sick.patient == "313572750430997347502932654319389875966"
    reasons = {skip.path: skip.kind for skip in dataset.skipped}
    assert reasons[paths[2]] == reasons[paths[3]] == "empty label"  # ['']; and a blank (nan) cell
    assert "is not a Python list" in reasons[paths[4]] and len(reasons) == 3


def test_padchest_labels_are_literals_never_code():
    assert padchest_labels("['pneumonia', ' infiltrates ', '']") == ["pneumonia", "infiltrates"]
    assert padchest_labels("nan") == [] and padchest_labels("['']") == []
    assert "not a Python list" in padchest_labels("__import__('os').getcwd()")
    assert "not a Python list" in padchest_labels("[1, 2]")


# --- RSNA Pneumonia ---------------------------------------------------------------------------------------------

RSNA_LABELS = """patientId,x,y,width,height,Target
0004cfab-14fd-4e49-80ba-63a80b6bddd6,,,,,0
00313ee0-9eaa-42f4-b0ab-c148ed3241cd,,,,,0
00436515-870c-4b36-a041-de91049b9ab4,264.0,152.0,213.0,379.0,1
00436515-870c-4b36-a041-de91049b9ab4,562.0,152.0,256.0,453.0,1
00569f44-917d-4c86-a842-81832af98c30,,,,,0
"""
RSNA_CLASSES = """patientId,class
0004cfab-14fd-4e49-80ba-63a80b6bddd6,No Lung Opacity / Not Normal
00313ee0-9eaa-42f4-b0ab-c148ed3241cd,No Lung Opacity / Not Normal
00436515-870c-4b36-a041-de91049b9ab4,Lung Opacity
00436515-870c-4b36-a041-de91049b9ab4,Lung Opacity
00569f44-917d-4c86-a842-81832af98c30,Lung Opacity
"""


def test_rsna_one_image_per_patient_positive_where_any_box(tmp_path: Path, monkeypatch):
    labels = write(tmp_path / "stage_2_train_labels.csv", RSNA_LABELS)
    patients = sorted({line.split(",")[0] for line in RSNA_LABELS.splitlines()[1:]})
    placeholders(tmp_path, [f"stage_2_train_images/{patient}.dcm" for patient in patients], monkeypatch)
    dataset = read_labels(tmp_path, LabelSettings(labels=str(labels)))
    records = {record.patient: record for record in dataset.records}
    assert len(records) == 4 and dataset.classes == ("Lung Opacity",) and not dataset.skipped
    assert records["00436515-870c-4b36-a041-de91049b9ab4"].label == Label.of_findings(["Lung Opacity"])
    assert records["0004cfab-14fd-4e49-80ba-63a80b6bddd6"].label == Label.of_findings()
    assert records["0004cfab-14fd-4e49-80ba-63a80b6bddd6"].path.startswith("stage_2_train_images/")
    assert any("any of its rows has Target 1" in note for note in dataset.notes)
    # The class info beside it: a column for --subgroups class; a class that contradicts the Target leaves it out.
    write(tmp_path / "stage_2_detailed_class_info.csv", RSNA_CLASSES)
    joined = read_labels(tmp_path, LabelSettings(labels=str(labels), attribute_columns=("class",)))
    assert {record.attribute("class") for record in joined.records} == {"No Lung Opacity / Not Normal",
                                                                         "Lung Opacity"}  # fmt: skip
    [contradiction] = joined.skipped
    assert "00569f44" in contradiction.path and "contradicts Target 0" in contradiction.reason


# --- VinDr-CXR --------------------------------------------------------------------------------------------------

VINDR_FINDINGS = ("Aortic enlargement,Atelectasis,Calcification,Cardiomegaly,Clavicle fracture,Consolidation,Edema,"
                  "Emphysema,Enlarged PA,ILD,Infiltration,Lung Opacity,Lung cavity,Lung cyst,Mediastinal shift,"
                  "Nodule/Mass,Pleural effusion,Pleural thickening,Pneumothorax,Pulmonary fibrosis,Rib fracture,"
                  "Other lesion,COPD,Lung tumor,Pneumonia,Tuberculosis,Other diseases,No finding").split(",")


def vindr_row(image: str, reader: str, *marked: str) -> str:
    cells = ["1" if name in marked or (not marked and name == "No finding") else "0" for name in VINDR_FINDINGS]
    return ",".join([image, reader, *cells])


VINDR_LABELS = "\n".join([
    "image_id,rad_ID," + ",".join(VINDR_FINDINGS),
    vindr_row("000434271f63a053c4128a0ba6352c7f", "R2"),
    vindr_row("000434271f63a053c4128a0ba6352c7f", "R3"),
    vindr_row("000434271f63a053c4128a0ba6352c7f", "R6"),
    vindr_row("00053190460d56c53cc3e57321387478", "R11", "Cardiomegaly", "Aortic enlargement"),
    vindr_row("00053190460d56c53cc3e57321387478", "R9", "Cardiomegaly"),
    vindr_row("00053190460d56c53cc3e57321387478", "R8"),
]) + "\n"  # fmt: skip
VINDR_BOXES = """image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max
50a418190bc3fb1ef1633bf9678929b3,No finding,14,R11,,,,
9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R10,691.0,1375.0,1653.0,1831.0
9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R9,687.0,1380.0,1640.0,1820.0
9a5094b2563a1ef3ff50dc5c7ff71345,Pleural thickening,11,R9,627.0,357.0,947.0,433.0
9a5094b2563a1ef3ff50dc5c7ff71345,No finding,14,R8,,,,
50a418190bc3fb1ef1633bf9678929b3,No finding,14,R7,,,,
50a418190bc3fb1ef1633bf9678929b3,No finding,14,R15,,,,
"""


@pytest.mark.parametrize("vote, expected", [("majority", ["Cardiomegaly"]), ("any", ["Aortic enlargement",
                         "Cardiomegaly"]), ("all", [])])  # fmt: skip
def test_vindr_readers_are_combined_by_the_stated_vote(tmp_path: Path, monkeypatch, vote: str, expected: list):
    labels = write(tmp_path / "annotations" / "image_labels_train.csv", VINDR_LABELS)
    placeholders(tmp_path, ["train/000434271f63a053c4128a0ba6352c7f.dicom",
                            "train/00053190460d56c53cc3e57321387478.dicom"], monkeypatch)  # fmt: skip
    dataset = read_labels(tmp_path, LabelSettings(labels=str(labels), reader_vote=vote))
    records = {record.patient: record for record in dataset.records}
    assert records["00053190460d56c53cc3e57321387478"].label == Label.of_findings(expected)
    assert records["000434271f63a053c4128a0ba6352c7f"].label == Label.of_findings()
    assert any("3 reader(s) per image" in note and f"--reader-vote {vote}" in note for note in dataset.notes)


def test_vindr_boxes_file_counts_each_reader_once(tmp_path: Path, monkeypatch):
    labels = write(tmp_path / "train.csv", VINDR_BOXES)
    placeholders(tmp_path, ["train/50a418190bc3fb1ef1633bf9678929b3.dicom",
                            "train/9a5094b2563a1ef3ff50dc5c7ff71345.dicom"], monkeypatch)  # fmt: skip
    dataset = read_labels(tmp_path, LabelSettings(labels=str(labels)))
    records = {record.patient: record for record in dataset.records}
    # Cardiomegaly: 2 of 3 readers (R9's two boxes count once); Pleural thickening: 1 of 3.
    assert records["9a5094b2563a1ef3ff50dc5c7ff71345"].label == Label.of_findings(["Cardiomegaly"])
    assert records["50a418190bc3fb1ef1633bf9678929b3"].label == Label.of_findings()


# --- Recognition, forcing, and what is not a format -------------------------------------------------------------


def test_the_registry_is_the_options_choices():
    assert set(LABELS_FORMATS) == {"auto", "none", *FORMATS}


def test_forcing_a_format_a_generic_header_and_ambiguity(tmp_path: Path):
    nih = NIH_HEADER.split(",")
    assert recognise(nih, "auto", "x.csv").name == "nih" and recognise(nih, "nih", "x.csv").name == "nih"
    assert recognise(nih, "none", "x.csv") is None and recognise(["path", "label"], "auto", "x.csv") is None
    with pytest.raises(ValueError, match="lacks CheXpert's columns Path, Sex"):
        recognise(nih, "chexpert", "x.csv")
    with pytest.raises(ValueError, match="fits several formats \\(nih, rsna\\)"):
        recognise([*nih, "patientId", "Target"], "auto", "x.csv")
    with pytest.raises(ValueError, match="must be one of auto, none, nih, chexpert, mimic, padchest, rsna, vindr"):
        recognise(nih, "nih2017", "x.csv")
    with pytest.raises(ValueError, match="MIMIC-CXR-JPG's metadata file; give mimic-cxr-2.0.0-chexpert.csv"):
        recognise(MIMIC_METADATA.splitlines()[0].split(","), "auto", "x.csv")


def test_none_reads_a_known_file_with_the_options_alone(tmp_path: Path):
    labels = write(tmp_path / "Data_Entry_2017.csv", "\n".join(line + "," for line in [NIH_HEADER, *NIH_ROWS]))
    with pytest.raises(LabelsError, match="column 'path' \\(--path-column\\) is not in the header"):
        read_labels(tmp_path, LabelSettings(labels=str(labels), labels_format="none"))


def test_the_run_options_know_the_formats(tmp_path: Path):
    from benchmark.cli import parse_command  # here: the run's command line imports the backbones' libraries

    nih = write(tmp_path / "Data_Entry_2017.csv", "\n".join(line + "," for line in [NIH_HEADER, *NIH_ROWS]))
    chexpert = make_chexpert(tmp_path, valid=False) / "train.csv"
    base = ["--data", str(tmp_path)]
    with pytest.raises(SystemExit):
        parse_command([*base, "--labels", str(nih), "--labels-format", "nih2017"])
    for argv, message in (([*base, "--labels", str(nih), "--reader-vote", "all"], "--reader-vote does nothing"),
                          ([*base, "--labels", str(nih), "--uncertain", "ones"], "--uncertain does nothing"),
                          ([*base, "--labels-format", "nih"], "--labels-format does nothing")):  # fmt: skip
        config, given = parse_command(argv)
        with pytest.raises(ValueError, match=message):
            config.validate(given)
    config, given = parse_command([*base, "--labels", str(chexpert), "--uncertain", "ones", "--labels-format",
                                   "chexpert"])  # fmt: skip
    settings = config.validate(given).label_settings()
    assert (settings.labels_format, settings.uncertain) == ("chexpert", "ones")
    vindr = write(tmp_path / "image_labels_train.csv", VINDR_LABELS)
    config, given = parse_command([*base, "--labels", str(vindr), "--reader-vote", "any"])
    assert config.validate(given).label_settings().reader_vote == "any"


@pytest.mark.slow  # one end-to-end run; the formats' units have quick tests above
def test_an_nih_file_alone_runs_end_to_end(tmp_path: Path):
    from conftest import run_small_benchmark
    from test_multilabel import make_nih_set

    plain = make_nih_set(tmp_path / "nih")  # the images, and a CSV of their names, findings and patients
    rows = [line.split(",") for line in plain.read_text().splitlines()[1:]]
    labels = write(tmp_path / "nih" / "Data_Entry_2017.csv", "\n".join(
        [NIH_HEADER + ","] + [f"{name},{findings},0,{patient},45,M,PA,2500,2048,0.168,0.168," for name, findings,
                               patient in rows]) + "\n")  # fmt: skip
    assert run_small_benchmark(tmp_path / "nih", tmp_path, "--labels", str(labels)) == 0
    markdown = (tmp_path / "results" / "leaderboard.md").read_text()
    assert "labels format: NIH ChestX-ray14 (Data_Entry_2017.csv, recognised from its header)" in markdown
    assert "## Macro-averaged AUC per backbone" in markdown
