//! `junit.xml`: one test case per check per mode, for CI test tabs.

use super::RunReport;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

pub fn render(report: &RunReport) -> String {
    let mut junit = Report::new("chatbench");
    for mode in &report.modes {
        let mut suite = TestSuite::new(format!("{}/{}", report.scenario, mode.mode));
        for check in &mode.checks {
            let status = if let Some(why) = &check.off {
                let mut s = TestCaseStatus::skipped();
                s.set_message(format!("turned off: {why}"));
                s
            } else if check.passed {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(check.detail.clone());
                s
            };
            let mut case = TestCase::new(check.name.clone(), status);
            case.set_classname(format!("chatbench.{}.{}", report.scenario, mode.mode));
            suite.add_test_case(case);
        }
        junit.add_test_suite(suite);
    }
    junit.to_string().expect("JUnit XML of plain strings always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CheckResult, ModeReport};

    #[test]
    fn one_case_per_check_with_failures_marked() {
        let mode = ModeReport {
            mode: crate::scenario::Mode::Changestream.into(),
            checks: vec![
                CheckResult { name: "exactly_once".into(), passed: false, off: None, detail: "3 lost".into() },
                CheckResult { name: "live_equals_history".into(), passed: true, off: None, detail: "ok".into() },
                CheckResult { name: "liveness.progress".into(), passed: true, off: Some("silent rooms".into()), detail: "off".into() },
            ],
            ..Default::default()
        };
        let report = RunReport { scenario: "smoke".into(), modes: vec![mode], ..Default::default() };
        let xml = render(&report);
        assert_eq!(xml.matches("<testcase").count(), 3, "{xml}");
        assert_eq!(xml.matches("<failure").count(), 1, "{xml}");
        assert_eq!(xml.matches("<skipped").count(), 1, "{xml}");
        assert!(xml.contains("3 lost") && xml.contains("turned off: silent rooms"));
    }
}
