//! The method end to end on top of the engine: environments, LLM plug-ins, the ReAct agent
//! with retrieval at three stages, the bootstrapping and curation methods, and the
//! task-success predictor.
//!
//! This module is a thin client of [`crate::Database`]: every retrieval goes through
//! [`crate::Database::retrieve`], every usage count through the episode log.

pub mod openai;
pub mod wordcraft;
