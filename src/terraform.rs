//! Running the terraform binary: init, plan, apply, output; its JSON event stream.
