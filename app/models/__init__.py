"""All ORM tables, shared by the web process and the worker."""

from app.models import judges as judges  # noqa: F401  (AI judges' tables, issue 16)
from app.models._types import utcnow
from app.models.demonstrations import Demonstration, DemonstrationSource, DemonstrationStatus
from app.models.evaluation import CompletionScore, Evaluation, EvaluationStatus, VersionEval
from app.models.feedback import OVERALL, Feedback, FeedbackRating
from app.models.jobs import JobDemonstration, JobEvent, JobKind, JobStatus, TrainingJob
from app.models.labeling import (
    Assignment,
    AssignmentState,
    PairwiseComparison,
    Ranking,
    RankingTask,
    TaskCompletion,
    TaskStatus,
)
from app.models.projects import (
    DEFAULT_FLAGS,
    Completion,
    CompletionSource,
    FeedbackForm,
    HandoutOrder,
    Project,
    ProjectMember,
    Prompt,
    PromptSplit,
)
from app.models.training import ModelKind, ModelVersion, RoundEvent, RoundPrompt, RoundStatus, TrainingRound
from app.models.users import ApiToken, LoginAttempt, Role, TokenScope, User, WebSession

__all__ = [
    "JobDemonstration",
    "JobEvent",
    "JobKind",
    "JobStatus",
    "TrainingJob",
    "CompletionScore",
    "Demonstration",
    "DemonstrationSource",
    "DemonstrationStatus",
    "Evaluation",
    "Feedback",
    "FeedbackForm",
    "FeedbackRating",
    "HandoutOrder",
    "OVERALL",
    "EvaluationStatus",
    "VersionEval",
    "ApiToken",
    "Assignment",
    "AssignmentState",
    "Completion",
    "CompletionSource",
    "DEFAULT_FLAGS",
    "LoginAttempt",
    "ModelKind",
    "ModelVersion",
    "PairwiseComparison",
    "Project",
    "ProjectMember",
    "Prompt",
    "PromptSplit",
    "Ranking",
    "RankingTask",
    "Role",
    "RoundEvent",
    "RoundPrompt",
    "RoundStatus",
    "TaskCompletion",
    "TaskStatus",
    "TokenScope",
    "TrainingRound",
    "User",
    "WebSession",
    "utcnow",
]
