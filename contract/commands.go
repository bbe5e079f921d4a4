package contract

// The engine commands the worker runs, one struct each. A pointer or an
// omitempty field left out means "the engine's default": the worker sends
// only what a job or the operator set, and the paths it owns.

// Config is the configuration of one engine command.
type Config interface {
	Engine() (engine, command string)
}

// Caps bound what an engine reads of a project's files (the engines'
// defaults apply to what is left out).
type Caps struct {
	MaxUnpackedBytes  *int64 `json:"max_unpacked_bytes,omitempty"`
	MaxArchiveMembers *int   `json:"max_archive_members,omitempty"`
	MaxJSONBytes      *int64 `json:"max_json_bytes,omitempty"`
}

// Train holds what every train command shares.
type Train struct {
	Dataset   string `json:"dataset"`
	OutputDir string `json:"output_dir"`
	Size      string `json:"size,omitempty"`
	// Resume is a resumable checkpoint to continue; BaseCheckpoint an
	// earlier job's model to start from.
	Resume         string `json:"resume,omitempty"`
	BaseCheckpoint string `json:"base_checkpoint,omitempty"`

	Epochs                    *int     `json:"epochs,omitempty"`
	BatchSize                 *int     `json:"batch_size,omitempty"`
	GradientAccumulationSteps *int     `json:"gradient_accumulation_steps,omitempty"`
	LearningRate              *float64 `json:"learning_rate,omitempty"`
	WarmupSteps               *int     `json:"warmup_steps,omitempty"`
	ValSplit                  *float64 `json:"val_split,omitempty"`
	Caps
}

// TrainOf gives the shared part of a train command (for OOM retries and
// resume, which every trainer takes alike).
type TrainOf interface {
	Config
	Common() *Train
}

// StableTTSTrain is `stabletts train`.
type StableTTSTrain struct {
	Train
	SaveEveryEpochs *int   `json:"save_every_epochs,omitempty"`
	Frontend        string `json:"frontend,omitempty"`
	FromScratch     *bool  `json:"from_scratch,omitempty"`
}

func (*StableTTSTrain) Engine() (string, string) { return "stabletts", "train" }
func (c *StableTTSTrain) Common() *Train         { return &c.Train }

// StableTTSSynthesize is `stabletts synthesize`.
type StableTTSSynthesize struct {
	Checkpoint     string   `json:"checkpoint"`
	Dataset        string   `json:"dataset"`
	OutputDir      string   `json:"output_dir"`
	VoiceReference string   `json:"voice_reference"`
	Vocoder        string   `json:"vocoder,omitempty"`
	Steps          *int     `json:"steps,omitempty"`
	Temperature    *float64 `json:"temperature,omitempty"`
	CFGScale       *float64 `json:"cfg_scale,omitempty"`
	LengthScale    *float64 `json:"length_scale,omitempty"`
	Solver         string   `json:"solver,omitempty"`
	BatchSize      *int     `json:"batch_size,omitempty"`
	Caps
}

func (*StableTTSSynthesize) Engine() (string, string) { return "stabletts", "synthesize" }

// StableTTSEvaluate is `stabletts evaluate`: the held-out verses, scored.
type StableTTSEvaluate struct {
	Checkpoint string `json:"checkpoint"`
	Dataset    string `json:"dataset"`
	OutputDir  string `json:"output_dir"`
	Vocoder    string `json:"vocoder,omitempty"`
	SplitFile  string `json:"split_file,omitempty"`
	Split      string `json:"split,omitempty"`
	MaxItems   *int   `json:"max_items,omitempty"`
	Caps
}

func (*StableTTSEvaluate) Engine() (string, string) { return "stabletts", "evaluate" }

// StableTTSCheck is `stabletts check`: the operator's files load.
type StableTTSCheck struct {
	Vocoder        string `json:"vocoder,omitempty"`
	BaseCheckpoint string `json:"base_checkpoint,omitempty"`
	Device         string `json:"device,omitempty"`
}

func (*StableTTSCheck) Engine() (string, string) { return "stabletts", "check" }

// TextNormalization is how CTC training text is normalised.
type TextNormalization struct {
	Lowercase         *bool `json:"lowercase,omitempty"`
	RemovePunctuation *bool `json:"remove_punctuation,omitempty"`
	RemoveNumbers     *bool `json:"remove_numbers,omitempty"`
}

// Transmorgrifier is the post-corrector trained after a CTC model.
type Transmorgrifier struct {
	Enabled *bool `json:"enabled,omitempty"`
}

// LM is the n-gram language model built from the project's text.
type LM struct {
	Enabled *bool `json:"enabled,omitempty"`
	Order   *int  `json:"order,omitempty"`
}

// CTCTrain is `w2v2bert train` and `mms train`.
type CTCTrain struct {
	Train
	engine            string
	SaveEverySteps    *int               `json:"save_every_steps,omitempty"`
	BaseModel         string             `json:"base_model,omitempty"`
	Architecture      string             `json:"architecture,omitempty"`
	Language          string             `json:"language,omitempty"`
	MaskTimeProb      *float64           `json:"mask_time_prob,omitempty"`
	Dropout           *float64           `json:"dropout,omitempty"`
	TestSplit         *float64           `json:"test_split,omitempty"`
	TextNormalization *TextNormalization `json:"text_normalization,omitempty"`
	Transmorgrifier   *Transmorgrifier   `json:"transmorgrifier,omitempty"`
	LM                *LM                `json:"lm,omitempty"`
	LMCorpus          string             `json:"lm_corpus,omitempty"`
}

// NewCTCTrain is a train config for a CTC engine (w2v2bert or mms).
func NewCTCTrain(engine string) *CTCTrain { return &CTCTrain{engine: engine} }

func (c *CTCTrain) Engine() (string, string) { return c.engine, "train" }
func (c *CTCTrain) Common() *Train           { return &c.Train }

// CTCTranscribe is `w2v2bert transcribe` (and the part of `mms
// transcribe` they share).
type CTCTranscribe struct {
	engine  string
	Model   string `json:"model"`
	Dataset string `json:"dataset"`
	Decoder string `json:"decoder,omitempty"`
	Caps
}

// NewCTCTranscribe is a transcribe config for a CTC engine.
func NewCTCTranscribe(engine string) *CTCTranscribe { return &CTCTranscribe{engine: engine} }

func (c *CTCTranscribe) Engine() (string, string) { return c.engine, "transcribe" }

// MMSTranscribe is `mms transcribe`: an adapter needs its base.
type MMSTranscribe struct {
	CTCTranscribe
	BaseModel string `json:"base_model,omitempty"`
}

// NewMMSTranscribe is a transcribe config for the mms engine.
func NewMMSTranscribe() *MMSTranscribe {
	return &MMSTranscribe{CTCTranscribe: CTCTranscribe{engine: "mms"}}
}

// Transcribe is what every CTC transcribe config shares.
type Transcribe interface {
	Config
	Shared() *CTCTranscribe
}

func (c *CTCTranscribe) Shared() *CTCTranscribe { return c }

// HubFetch is `hub fetch`: hub references into the local cache, before a
// sandboxed engine (which has no network) starts.
type HubFetch struct {
	Refs         []string `json:"refs"`
	OptionalRefs []string `json:"optional_refs,omitempty"`
}

func (*HubFetch) Engine() (string, string) { return "hub", "fetch" }

// Ptr is a pointer to v, for the optional fields.
func Ptr[T any](v T) *T { return &v }
