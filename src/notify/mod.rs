pub mod console;
pub mod render;
