"""Reports of one model on utterances: the analysis of one utterance (:mod:`.utterance`), its
alignment in the formats of ``attnprobe align`` (:mod:`.alignments`), terminal text (:mod:`.text`),
figures on a time axis (:mod:`.figures`) and one self-contained HTML page (:mod:`.html`,
:mod:`.sections`). The command line calls these; they work the same from Python."""
